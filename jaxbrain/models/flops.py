"""Forward FLOPs as the paper counts them: 2 x the multiply-adds of every matrix product and convolution.

Published model figures (torchvision's GFLOPS column, timm's and fvcore's GMACs, the paper's C = D x FLOPs_fwd
with AlexNet's 1.43 GFLOP) count the multiply-adds of linear layers, convolutions and attention products only;
XLA's cost analysis also counts elementwise work (an exact GELU alone is dozens of operations per element), a few
percent more. :func:`matmul_flops` walks the traced program instead and counts every ``dot_general`` and
``conv_general_dilated``, inside nested calls and scans too (see docs/method.md, Model zoo).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
from jax.extend import core as jex_core


def _dot_flops(eqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    contracted = math.prod(lhs[d] for d in lhs_contract)
    batch = math.prod(lhs[d] for d in lhs_batch)
    lhs_free = math.prod(s for d, s in enumerate(lhs) if d not in (*lhs_contract, *lhs_batch))
    rhs_free = math.prod(s for d, s in enumerate(rhs) if d not in (*rhs_contract, *rhs_batch))
    return 2 * batch * lhs_free * rhs_free * contracted


def _conv_flops(eqn) -> int:
    kernel = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    out_channels = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
    # every output element sums (input channels per group) x (kernel window) products
    return 2 * math.prod(out) * (math.prod(kernel) // out_channels)


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jex_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jex_core.Jaxpr):
                yield item


def _count(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "cond":
            total += max(_count(branch.jaxpr) for branch in eqn.params["branches"])
        elif name == "while":
            raise ValueError("matmul_flops: a while loop has no static trip count; count its body per step")
        elif name == "scan":
            total += eqn.params["length"] * _count(eqn.params["jaxpr"].jaxpr)
        else:
            total += sum(_count(sub) for sub in _sub_jaxprs(eqn))
    return total


def matmul_flops(fn: Callable, *args, **kwargs) -> int:
    """2 x multiply-adds of the matrix products and convolutions of ``fn(*args, **kwargs)`` (args may be
    ``jax.ShapeDtypeStruct``s: nothing is computed)."""
    return _count(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)
