"""2-D rotary position embedding of DINOv3 (Simeoni et al. 2025), as timm's ``RotaryEmbeddingDinoV3`` computes it.

Each patch gets coordinates centred in its cell and mapped to [-1, 1] per axis ((i + 0.5) / H * 2 - 1); a head of
size D uses D/4 periods ``temperature ** (2 k / (D/2))`` per axis, angles ``2 pi coord / period`` laid out as
[row angles, column angles] twice ("rotate half" layout). Queries and keys of the patch tokens are rotated;
prefix tokens (class, registers) are not. Inference only: the training-time coordinate jitter is not applied.
See docs/method.md, "Vision transformer variants".
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def dinov3_sin_cos(grid: tuple[int, int], head_dim: int, temperature: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos), each (H*W, head_dim) float32, for a row-major ``grid`` of patches."""
    if head_dim % 4:
        raise ValueError(f"rotary embedding needs a head size divisible by 4, got {head_dim}")
    n_freq = head_dim // 4
    periods = temperature ** (2.0 * np.arange(n_freq) / (head_dim // 2))
    axes = [(np.arange(size) + 0.5) / size * 2.0 - 1.0 for size in grid]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    angles = (2.0 * np.pi * coords[:, :, None] / periods).reshape(coords.shape[0], -1)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)


def rotate_half(x: jnp.ndarray) -> jnp.ndarray:
    """[x1, x2] -> [-x2, x1] on the last axis."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply(x: jnp.ndarray, sin: np.ndarray, cos: np.ndarray, num_prefix_tokens: int) -> jnp.ndarray:
    """Rotate tokens ``num_prefix_tokens:`` of ``x`` (batch, tokens, heads, head_dim); prefix tokens pass through."""
    prefix, patches = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
    sin = jnp.asarray(sin, x.dtype)[None, :, None, :]
    cos = jnp.asarray(cos, x.dtype)[None, :, None, :]
    rotated = patches * cos + rotate_half(patches) * sin
    return jnp.concatenate([prefix, rotated], axis=1)
