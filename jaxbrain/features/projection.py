"""The reference's sparse random projection, generated from a seed, never stored dense.

Layers whose flattened size ``D`` exceeds ``projection_dim`` (30,000 by default, as the reference) are projected
with a ``D x projection_dim`` matrix whose entries are 0 with probability ``1 - s`` and ``+-sqrt(1/s) /
sqrt(projection_dim)`` with probability ``s / 2`` each, ``s = 1 / sqrt(D)`` (scikit-learn's
``SparseRandomProjection`` with ``density="auto"``; see docs/method.md, "Features and projection").

Each output column ``j`` is generated from its own counter-based key ``fold_in(key(seed), j)``: the gaps
between its non-zero rows are Geometric(s) (``floor(log u / log(1 - s))`` for uniform ``u``), which draws exactly
the Bernoulli(s) pattern of the reference, and its signs are fair coin flips. The matrix therefore depends only on
``(D, projection_dim, seed)``, never on the batch size, the devices or the order in which columns are made.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

PROJECTION_DIM = 30000
_PROJECTION_CHUNK = 512  # output columns gathered at once by `project`


@dataclasses.dataclass(frozen=True)
class SparseProjection:
    """A ``in_dim x out_dim`` sparse random projection stored by output column.

    ``rows[j, t]`` is the input row of the ``t``-th non-zero of column ``j`` and ``signs[j, t]`` its sign
    (0 for unused slots); every non-zero has magnitude ``scale``. Columns past ``out_dim`` (padding to a
    multiple of the gather chunk) are empty.
    """

    rows: jax.Array  # (out_dim_padded, width) int32
    signs: jax.Array  # (out_dim_padded, width) int8
    in_dim: int
    out_dim: int
    density: float
    scale: float


def projection_density(in_dim: int) -> float:
    """The reference's density ``1 / sqrt(in_dim)``."""
    return 1.0 / math.sqrt(in_dim)


def projection_width(in_dim: int) -> int:
    """Non-zero slots per column: the Binomial(in_dim, density) mean plus 10 standard deviations plus 16."""
    s = projection_density(in_dim)
    mean = in_dim * s
    return int(math.ceil(mean + 10.0 * math.sqrt(in_dim * s * (1.0 - s)) + 16))


@jax.jit(static_argnums=(1, 2, 3))
def _projection_columns(key: jax.Array, in_dim: int, width: int, n_columns: int):
    """Rows, signs and an overflow flag of columns 0..n_columns-1 (each column from its own folded key)."""
    s = projection_density(in_dim)
    log_fail = math.log1p(-s)

    def column(j):
        gap_key, sign_key = jax.random.split(jax.random.fold_in(key, j))
        u = 1.0 - jax.random.uniform(gap_key, (width,), jnp.float32)  # (0, 1]
        # failures before each success of a Bernoulli(s) sequence are Geometric(s): floor(log u / log(1-s))
        gaps = jnp.minimum(jnp.floor(jnp.log(u) / log_fail), in_dim).astype(jnp.int32)
        positions = jnp.cumsum(gaps + 1) - 1
        valid = positions < in_dim
        signs = jnp.where(jax.random.bernoulli(sign_key, 0.5, (width,)), 1, -1).astype(jnp.int8)
        return (jnp.where(valid, positions, 0).astype(jnp.int32), jnp.where(valid, signs, 0).astype(jnp.int8),
                positions[-1] < in_dim)

    rows, signs, overflow = jax.vmap(column)(jnp.arange(n_columns, dtype=jnp.uint32))
    return rows, signs, jnp.any(overflow)


def sparse_projection(in_dim: int, out_dim: int = PROJECTION_DIM, seed: int = 0) -> SparseProjection:
    """The sparse random projection ``in_dim -> out_dim`` of ``seed`` (generated on the default device)."""
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"sparse_projection: dimensions must be positive, got {in_dim} -> {out_dim}")
    width = projection_width(in_dim)
    padded = -(-out_dim // _PROJECTION_CHUNK) * _PROJECTION_CHUNK
    rows, signs, overflow = _projection_columns(jax.random.key(seed), in_dim, width, out_dim)
    if bool(overflow):  # probability below 1e-20 per column; refuse rather than truncate
        raise RuntimeError(f"sparse_projection({in_dim}, {out_dim}, seed={seed}): a column needs more than "
                           f"{width} non-zeros")
    if padded > out_dim:
        rows = jnp.pad(rows, ((0, padded - out_dim), (0, 0)))
        signs = jnp.pad(signs, ((0, padded - out_dim), (0, 0)))
    density = projection_density(in_dim)
    return SparseProjection(rows, signs, in_dim, out_dim, density, math.sqrt(1.0 / density) / math.sqrt(out_dim))


def projection_matrix(projection: SparseProjection) -> np.ndarray:
    """The dense ``(in_dim, out_dim)`` float64 matrix (for checks on small dimensions only)."""
    rows = np.asarray(projection.rows)[:projection.out_dim]
    signs = np.asarray(projection.signs)[:projection.out_dim].astype(np.float64)
    dense = np.zeros((projection.in_dim, projection.out_dim))
    cols = np.broadcast_to(np.arange(projection.out_dim)[:, None], rows.shape)
    np.add.at(dense, (rows.ravel(), cols.ravel()), signs.ravel())
    return dense * projection.scale


def project(x: jax.Array, rows: jax.Array, signs: jax.Array, scale: float, out_dim: int) -> jax.Array:
    """``x (B, D) @ R`` for the column-stored sparse ``R`` (rows, signs, scale); float32 (B, out_dim)."""
    xt = x.astype(jnp.float32).T  # (D, B): each gathered row is one contiguous feature across the batch
    width = rows.shape[1]

    def chunk(args):
        r, s = args  # multiply-and-sum fuses with the gather (no (chunk, width, B) buffer)
        return (s.astype(jnp.float32)[..., None] * xt[r]).sum(axis=1)

    out = jax.lax.map(chunk, (rows.reshape(-1, _PROJECTION_CHUNK, width),
                              signs.reshape(-1, _PROJECTION_CHUNK, width)))
    return (out.reshape(-1, x.shape[0])[:out_dim] * scale).T
