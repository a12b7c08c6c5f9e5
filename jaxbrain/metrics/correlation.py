"""Pearson correlation between observed and predicted responses, per target."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["pearson_r"]


@jax.jit
def pearson_r(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """Pearson r of each column, correlating over axis 0 (the stimuli).

    Args:
      y_true: observed responses, shape (n_stimuli, ...) e.g. (n_stimuli, n_targets).
      y_pred: predictions, same shape as ``y_true``.

    Returns:
      r with shape ``y_true.shape[1:]`` (a scalar for 1-D input). A constant column gives NaN.
      Works under ``jax.vmap`` for batches of (layer, fold, ...) pairs.
    """
    y_true = jnp.asarray(y_true)
    y_pred = jnp.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"pearson_r: y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    dtype = jnp.result_type(y_true.dtype, y_pred.dtype, jnp.float32)
    a = y_true.astype(dtype)
    b = y_pred.astype(dtype)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    num = jnp.sum(a * b, axis=0)
    den = jnp.sqrt(jnp.sum(a * a, axis=0) * jnp.sum(b * b, axis=0))
    return num / den
