"""AdamW with linear warmup and cosine decay stepped per iteration, optional gradient clipping.

The learning rate at iteration t (0-based) of T, with W warmup iterations, peak lr and floor lr_min:

    lr(t) = lr * t / W                                             for t < W
    lr(t) = lr_min + (lr - lr_min) * (1 + cos(pi * (t - W) / (T - W))) / 2     for W <= t <= T

(optax's ``warmup_cosine_decay_schedule`` from 0). The paper's fine-tuning (Table S3): AdamW (0.9, 0.999,
eps 1e-8), lr 1e-5, weight decay 0.05, 5 warmup epochs, cosine to 1e-6; warmup and decay are counted in
iterations (epochs x iterations per epoch), as timm's per-iteration scheduler does.

Weight decay applies to every parameter by default (PyTorch's ``AdamW(model.parameters())``); with
``decay_vectors=False`` biases and normalisation scales (arrays of rank < 2) are exempt (the timm/DeiT habit).
"""

from __future__ import annotations

import dataclasses

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 0
    total_steps: int = 1
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 0.0  # 0: no clipping
    decay_vectors: bool = True

    @classmethod
    def from_config(cls, config, total_steps: int, warmup_steps: int) -> "OptimizerConfig":
        """From an ml_collections ``optimizer`` block (lr, min_lr, b1, b2, eps, weight_decay, clip_norm, ...)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"total_steps", "warmup_steps"}
        return cls(total_steps=total_steps, warmup_steps=warmup_steps,
                   **{k: v for k, v in dict(config).items() if k in known})


def schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """The per-iteration learning rate (module docstring)."""
    if cfg.total_steps < 1 or not 0 <= cfg.warmup_steps <= cfg.total_steps:
        raise ValueError(f"schedule: need 0 <= warmup_steps ({cfg.warmup_steps}) <= total_steps "
                         f"({cfg.total_steps}) and total_steps >= 1")
    if cfg.warmup_steps == cfg.total_steps:
        return optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, cfg.total_steps, cfg.min_lr)


def _decay_mask(params):
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def adamw(cfg: OptimizerConfig) -> optax.GradientTransformation:
    """Optional global-norm clipping, then AdamW on :func:`schedule`."""
    mask = None if cfg.decay_vectors else _decay_mask
    opt = optax.adamw(schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=mask)
    if cfg.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    return opt
