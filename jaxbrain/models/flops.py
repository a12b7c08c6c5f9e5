"""Forward FLOPs per image, under two conventions (docs/method.md, "Model zoo").

``dense``: 2 x the multiply-adds of every convolution and matrix product, kernel taps over zero padding
included, nothing for normalisation, activations, pooling or additions. This is how torchvision's and fvcore's
tables count (their "GFLOPS" columns list multiply-adds; x2 gives FLOPs), so published figures compare with it.
The count walks the traced program (jaxpr), so it needs no compilation and no device.

``xla``: XLA's cost analysis of the compiled forward. It also counts 2 FLOPs per multiply-add, but only for
kernel taps that land inside the image (zero padding is free), and adds elementwise work (normalisation,
activations, pooling): below ``dense`` for small padded maps, above it for activation-heavy nets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.models import layers

CONVENTIONS = ("xla", "dense")


def _conv_macs(eqn) -> int:
    out = eqn.outvars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, *spatial)
    taps = math.prod(rhs[d] for d in rhs_spec[2:])
    return math.prod(out) * rhs[rhs_spec[1]] * taps


def _dot_macs(eqn) -> int:
    (contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item


def jaxpr_macs(jaxpr) -> int:
    """Multiply-adds of the convolutions and dot products in ``jaxpr`` (scan bodies times their length)."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_macs(eqn)
        elif name == "dot_general":
            total += _dot_macs(eqn)
        else:
            repeat = eqn.params.get("length", 1) if name == "scan" else 1
            total += repeat * sum(jaxpr_macs(sub) for sub in _sub_jaxprs(eqn))
    return total


def _logits_fn(model: nnx.Module):
    graphdef, state = nnx.split(model)

    def logits(state, images):
        return nnx.merge(graphdef, state)(images, train=False)[0]

    return logits, state


def dense_flops(model: nnx.Module, size: int) -> float:
    """2 x multiply-adds of one ``size`` x ``size`` image's forward (padding taps included)."""
    logits, state = _logits_fn(model)
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    with layers.native_ops():
        closed = jax.make_jaxpr(logits)(state, images)
    return 2.0 * jaxpr_macs(closed.jaxpr)


def xla_flops(model: nnx.Module, size: int, name: str = "model") -> float:
    """XLA's cost-analysis FLOPs of one ``size`` x ``size`` image's compiled forward."""
    logits, state = _logits_fn(model)
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    analysis = jax.jit(logits).lower(state, images).compile().cost_analysis()
    if isinstance(analysis, Sequence):
        analysis = analysis[0]
    if not analysis or "flops" not in analysis:
        raise RuntimeError(f"XLA cost analysis returned no FLOP count for {name}")
    return float(analysis["flops"])
