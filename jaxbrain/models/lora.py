"""Low-rank adaptation (LoRA; Hu et al. 2022) of a Vision Transformer's attention and MLP projections.

A frozen linear map ``y = x W + b`` (W: in x out) gains a trainable low-rank update,

    y = x W + b + (alpha / r) * dropout(x) A B,     A: in x r,  B: r x out,

with A drawn like PyTorch's ``Linear`` default (PEFT's ``kaiming_uniform(a=sqrt(5))``: U(-1/sqrt(in), 1/sqrt(in)))
and B initialised to zero, so the adapted model starts as the base model. The paper's fine-tuning (Appendix G):
rank r in {8, 16, 32}, alpha 32, dropout 0.1 on each block's ``attn.qkv``, ``mlp.fc1`` and ``mlp.fc2``, the
classifier head fully trainable, everything else frozen; the shared setting is r = 32 with lr 1e-4.

:func:`apply_lora` wraps those modules of a built model in place (from outside the model's code: the module
``blocks.3.attn.qkv`` becomes a :class:`LoRALinear` whose ``base`` is the original ``nnx.Linear``);
:func:`trainable_filter` selects the adapters and the head for ``nnx.Optimizer(..., wrt=...)``, so only they
get optimizer state. :func:`merge` folds every update into its base weight (``W + (alpha / r) A B``) and
returns the plain model, whose state dict has the base model's names (exportable, scorable).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

TARGETS = ("attn.qkv", "mlp.fc1", "mlp.fc2")
PAPER_ALPHA = 32.0
PAPER_DROPOUT = 0.1


class LoRAParam(nnx.Param):
    """A LoRA adapter matrix (the only parameters trained besides the head)."""


class LoRALinear(nnx.Module):
    """``base(x) + (alpha / rank) * dropout(x) @ lora_a @ lora_b`` around a frozen ``nnx.Linear``."""

    def __init__(self, base: nnx.Linear, rank: int, alpha: float = PAPER_ALPHA, dropout: float = PAPER_DROPOUT,
                 *, rngs: nnx.Rngs):
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        bound = 1.0 / math.sqrt(base.in_features)
        self.lora_a = LoRAParam(jax.random.uniform(rngs.params(), (base.in_features, rank), jnp.float32,
                                                   -bound, bound))
        self.lora_b = LoRAParam(jnp.zeros((rank, base.out_features), jnp.float32))
        self.dropout = nnx.Dropout(dropout, deterministic=True, rngs=rngs)
        self.scale = alpha / rank
        self.dtype = base.dtype
        self.param_dtype = base.param_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        update = self.dropout(x).astype(dtype) @ self.lora_a[...].astype(dtype) @ self.lora_b[...].astype(dtype)
        return self.base(x) + (self.scale * update).astype(dtype)


def _targets(model: nnx.Module):
    if not hasattr(model, "blocks"):
        raise ValueError(f"LoRA targets ViT blocks; {type(model).__name__} has no `blocks`")
    for i, block in enumerate(model.blocks):
        for target in TARGETS:
            parent_name, name = target.split(".")
            yield f"blocks.{i}.{target}", getattr(block, parent_name), name


def apply_lora(model: nnx.Module, rank: int = 32, alpha: float = PAPER_ALPHA, dropout: float = PAPER_DROPOUT, *,
               seed: int = 0) -> nnx.Module:
    """Wrap every block's qkv, fc1 and fc2 of a ViT in :class:`LoRALinear` (in place); returns ``model``."""
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    for path, parent, name in _targets(model):
        base = getattr(parent, name)
        if isinstance(base, LoRALinear):
            raise ValueError(f"{path} already carries a LoRA adapter")
        setattr(parent, name, LoRALinear(base, rank, alpha, dropout, rngs=rngs))
    return model


def trainable_filter(head: str = "head"):
    """``wrt`` filter: the adapters and every parameter under the classifier module ``head``."""
    return nnx.Any(LoRAParam, nnx.All(nnx.Param, nnx.PathContains(head)))


def parameter_counts(model: nnx.Module, head: str = "head") -> dict[str, int]:
    """Trainable (adapters + head) and total parameter counts (adapters included in the total)."""
    def count(filt):
        return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, filt))))
    return {"trainable": count(trainable_filter(head)), "total": count(nnx.Param)}


def merge(model: nnx.Module) -> nnx.Module:
    """A copy of ``model`` with every adapter folded into its base weight and the wrappers removed."""
    merged = nnx.clone(model)
    for _, parent, name in _targets(merged):
        module = getattr(parent, name)
        if not isinstance(module, LoRALinear):
            continue
        delta = module.scale * (module.lora_a[...] @ module.lora_b[...])
        module.base.kernel.set_value(module.base.kernel[...] + delta.astype(module.base.kernel.dtype))
        setattr(parent, name, module.base)
    return merged
