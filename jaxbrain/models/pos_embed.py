"""Resampling learned ViT position embeddings to a new patch grid, as timm does when a checkpoint's grid differs.

timm's ``resample_abs_pos_embed`` calls ``torch.nn.functional.interpolate(mode='bicubic', antialias=True,
align_corners=False)``. With ``antialias=True`` PyTorch does not use its plain bicubic kernel (a = -0.75, edge
clamping); it uses the separable Pillow-style filter of ``upsample_bicubic2d_aa``: a = -0.5, support widened by
the scale when shrinking, taps outside the grid dropped and the remaining weights renormalised. This module
computes exactly those weights in float64 numpy, so checkpoints at one resolution load at another without torch
(docs/method.md, "Vision transformer variants"). ``jax.image.resize`` uses a different kernel and edge rule.
"""

from __future__ import annotations

import numpy as np

_CUBIC_A = -0.5  # PyTorch's antialiased bicubic uses Pillow's coefficient, not the -0.75 of its plain bicubic


def _cubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    a = _CUBIC_A
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def antialiased_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) weights of PyTorch's antialiased bicubic resize along one axis (align_corners=False)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        w = _cubic((taps - center + 0.5) * inv_scale)
        total = w.sum()
        weights[i, lo:hi] = w / total if total != 0.0 else w
    return weights


def resample_grid(grid: np.ndarray, new_size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, C) grid to (new_h, new_w, C) with PyTorch's antialiased bicubic filter."""
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 3:
        raise ValueError(f"expected an (H, W, C) grid, got shape {grid.shape}")
    rows = antialiased_bicubic_matrix(grid.shape[0], new_size[0])
    cols = antialiased_bicubic_matrix(grid.shape[1], new_size[1])
    return np.einsum("ih,jw,hwc->ijc", rows, cols, grid)


def resample_abs_pos_embed(
    pos_embed: np.ndarray,
    new_size: tuple[int, int],
    old_size: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
) -> np.ndarray:
    """timm's ``resample_abs_pos_embed`` in numpy: (1, prefix + H*W, C) -> (1, prefix + new_h*new_w, C).

    Prefix tokens (class, distillation, register) keep their embeddings; the patch grid is resized. A square old
    grid is assumed when ``old_size`` is None.
    """
    pos_embed = np.asarray(pos_embed)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"position embedding must be shaped (1, tokens, width), got {pos_embed.shape}")
    n_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_size is None:
        side = int(round(np.sqrt(n_grid)))
        old_size = (side, side)
    if old_size[0] * old_size[1] != n_grid:
        raise ValueError(f"position embedding has {n_grid} grid tokens, not a {old_size[0]}x{old_size[1]} grid "
                         f"(with {num_prefix_tokens} prefix tokens)")
    if tuple(old_size) == tuple(new_size):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[0, num_prefix_tokens:]
    resized = resample_grid(grid.reshape(*old_size, -1), new_size).astype(pos_embed.dtype)
    return np.concatenate([prefix, resized.reshape(1, -1, pos_embed.shape[-1])], axis=1)
