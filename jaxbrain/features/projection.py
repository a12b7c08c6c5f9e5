"""The reference's sparse random projection, generated from a seed, never stored dense.

Layers whose flattened size ``D`` exceeds ``projection_dim`` (30,000 by default, as the reference) are projected
with a ``D x projection_dim`` matrix whose entries are 0 with probability ``1 - s`` and ``+-sqrt(1/s) /
sqrt(projection_dim)`` with probability ``s / 2`` each, ``s = 1 / sqrt(D)`` (scikit-learn's
``SparseRandomProjection`` with ``density="auto"``; see docs/method.md, "Features and projection").

Each output column ``j`` is generated from its own counter-based key ``fold_in(key(seed), j)``: the gaps
between its non-zero rows are Geometric(s) (``floor(log u / log(1 - s))`` for uniform ``u``), which draws exactly
the Bernoulli(s) pattern of the reference, and its signs are fair coin flips. The matrix therefore depends only on
``(D, projection_dim, seed)``, never on the batch size, the devices or the order in which columns are made.

Three kernels compute ``x @ R`` with that matrix: :func:`project` gathers with stored column indices inside a
compiled step (accelerators), :func:`project_generated` makes each block of indices in the step instead (nothing
stored), and :func:`project_on_host` runs scipy's CSR product on the host (CPUs, where XLA's gathers are slow).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import math
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

PROJECTION_DIM = 30000
_PROJECTION_CHUNK = 512  # output columns gathered at once by `project`
_HOST_BLOCK = 2048  # output columns generated at once while building a host matrix
_HOST_MATRICES: collections.OrderedDict = collections.OrderedDict()
_HOST_MATRICES_KEPT = 8
_HOST_LOCK = threading.Lock()


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


def projection_scale(in_dim: int, out_dim: int) -> float:
    """The magnitude ``sqrt(1 / density) / sqrt(out_dim)`` of every non-zero."""
    return math.sqrt(1.0 / projection_density(in_dim)) / math.sqrt(out_dim)


def projection_width(in_dim: int) -> int:
    """Non-zero slots per column: the Binomial(in_dim, density) mean plus 10 standard deviations plus 16."""
    s = projection_density(in_dim)
    mean = in_dim * s
    return int(math.ceil(mean + 10.0 * math.sqrt(in_dim * s * (1.0 - s)) + 16))


@jax.jit(static_argnums=(1, 2, 3))
def _projection_columns(key: jax.Array, in_dim: int, width: int, n_columns: int, start=0):
    """Rows, signs and overflow flags of columns start..start+n_columns-1 (each from its own folded key)."""
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

    return jax.vmap(column)(jnp.asarray(start, jnp.uint32) + jnp.arange(n_columns, dtype=jnp.uint32))


def sparse_projection(in_dim: int, out_dim: int = PROJECTION_DIM, seed: int = 0) -> SparseProjection:
    """The sparse random projection ``in_dim -> out_dim`` of ``seed`` (generated on the default device)."""
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"sparse_projection: dimensions must be positive, got {in_dim} -> {out_dim}")
    width = projection_width(in_dim)
    padded = -(-out_dim // _PROJECTION_CHUNK) * _PROJECTION_CHUNK
    rows, signs, overflow = _projection_columns(jax.random.key(seed), in_dim, width, out_dim)
    _refuse_overflow(overflow, in_dim, out_dim, seed, width)
    if padded > out_dim:
        rows = jnp.pad(rows, ((0, padded - out_dim), (0, 0)))
        signs = jnp.pad(signs, ((0, padded - out_dim), (0, 0)))
    return SparseProjection(rows, signs, in_dim, out_dim, projection_density(in_dim),
                            projection_scale(in_dim, out_dim))


def _refuse_overflow(overflow, in_dim: int, out_dim: int, seed: int, width: int) -> None:
    if bool(jnp.any(overflow)):  # probability below 1e-20 per column; refuse rather than truncate
        raise RuntimeError(f"sparse_projection({in_dim}, {out_dim}, seed={seed}): a column needs more than "
                           f"{width} non-zeros")


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
    # (D, B): each gathered row is one contiguous feature across the batch. Gathered in the activations' own
    # dtype (half the traffic for bfloat16) and widened exactly to float32 before the sum.
    xt = x.T
    width = rows.shape[1]

    def chunk(args):
        return _column_sums(xt, *args)

    out = jax.lax.map(chunk, (rows.reshape(-1, _PROJECTION_CHUNK, width),
                              signs.reshape(-1, _PROJECTION_CHUNK, width)))
    return (out.reshape(-1, x.shape[0])[:out_dim] * scale).T


def _column_sums(xt: jax.Array, rows: jax.Array, signs: jax.Array) -> jax.Array:
    """``(chunk, B)`` float32: column ``c`` is the sum over ``t`` of ``signs[c, t] * xt[rows[c, t]]``. The multiply
    and sum fuse with the gather (no ``(chunk, width, B)`` buffer)."""
    return (signs.astype(jnp.float32)[..., None] * xt[rows].astype(jnp.float32)).sum(axis=1)


@functools.cache
def check_generated(in_dim: int, out_dim: int, seed: int) -> None:
    """Generates every column once, a block at a time (nothing kept), and refuses a matrix with an overflowing
    column, as :func:`sparse_projection` does: what :func:`project_generated` may then skip."""
    width = projection_width(in_dim)
    for start in range(0, out_dim, _HOST_BLOCK):
        overflow = _projection_columns(jax.random.key(seed), in_dim, width, _HOST_BLOCK, start)[2]
        _refuse_overflow(overflow[:min(_HOST_BLOCK, out_dim - start)], in_dim, out_dim, seed, width)


def project_generated(x: jax.Array, in_dim: int, out_dim: int, seed: int) -> jax.Array:
    """:func:`project` with each block of columns generated in the step from ``seed`` instead of read from
    stored indices: no index array is ever resident, at the price of generating the matrix once per call."""
    width = projection_width(in_dim)
    xt = x.T
    key = jax.random.key(seed)

    def chunk(start):
        return _column_sums(xt, *_projection_columns(key, in_dim, width, _PROJECTION_CHUNK, start)[:2])

    starts = jnp.arange(0, out_dim, _PROJECTION_CHUNK, dtype=jnp.uint32)
    out = jax.lax.map(chunk, starts)
    return (out.reshape(-1, x.shape[0])[:out_dim] * projection_scale(in_dim, out_dim)).T


def host_projection(in_dim: int, out_dim: int = PROJECTION_DIM, seed: int = 0,
                    shards: int | None = None) -> tuple[scipy.sparse.csr_array, ...]:
    """The same matrix as :func:`sparse_projection` as float32 CSR arrays by input row, one per range of output
    columns (``shards``, default: one per CPU core), for :func:`project_on_host`. Cached per arguments.

    Built from column blocks generated in turn (twice: counts, then entries), so that no padded
    ``(out_dim, width)`` index array is ever held: the result is ``8 x nnz`` bytes, about 66 MB for
    ``in_dim`` 75,648 and 132 MB for 301,056.
    """
    shards = _host_threads() if shards is None else shards
    key = (in_dim, out_dim, seed, shards)
    with _HOST_LOCK:  # callbacks of several devices may ask at once
        if key in _HOST_MATRICES:
            _HOST_MATRICES.move_to_end(key)
            return _HOST_MATRICES[key]
        if in_dim < 1 or out_dim < 1:
            raise ValueError(f"host_projection: dimensions must be positive, got {in_dim} -> {out_dim}")
        bounds = np.linspace(0, out_dim, shards + 1).astype(int)
        matrices = tuple(_host_shard(in_dim, out_dim, seed, lo, hi) for lo, hi in zip(bounds, bounds[1:]))
        _HOST_MATRICES[key] = matrices
        while len(_HOST_MATRICES) > _HOST_MATRICES_KEPT:
            _HOST_MATRICES.pop(next(iter(_HOST_MATRICES)))
        return matrices


def release_host_projections() -> None:
    """Drops the cached host matrices (a later :func:`host_projection` builds them again)."""
    with _HOST_LOCK:
        _HOST_MATRICES.clear()


def _host_shard(in_dim: int, out_dim: int, seed: int, lo: int, hi: int) -> scipy.sparse.csr_array:
    counts = np.zeros(in_dim, np.int64)
    for _, rows, _ in _column_blocks(in_dim, out_dim, seed, lo, hi):
        counts += np.bincount(rows, minlength=in_dim)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    index_dtype = np.int32 if indptr[-1] < np.iinfo(np.int32).max else np.int64
    indices, data = np.empty(indptr[-1], index_dtype), np.empty(indptr[-1], np.float32)
    filled = indptr[:-1].copy()
    scale = np.float32(projection_scale(in_dim, out_dim))
    for columns, rows, signs in _column_blocks(in_dim, out_dim, seed, lo, hi):
        order = np.argsort(rows, kind="stable")  # by input row; columns stay ascending within a row
        rows, columns, signs = rows[order], columns[order], signs[order]
        first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        run = np.diff(np.r_[first, len(rows)])
        at = filled[rows] + np.arange(len(rows)) - np.repeat(first, run)
        indices[at], data[at] = columns - lo, signs * scale
        filled[rows[first]] += run
    return scipy.sparse.csr_array((data, indices, indptr.astype(index_dtype)), shape=(in_dim, hi - lo))


def _column_blocks(in_dim: int, out_dim: int, seed: int, lo: int, hi: int):
    """``(columns, rows, signs)`` of the non-zeros of columns lo..hi-1, one block of columns at a time."""
    width = projection_width(in_dim)
    for start in range(lo, hi, _HOST_BLOCK):
        rows, signs, overflow = _projection_columns(jax.random.key(seed), in_dim, width, _HOST_BLOCK, start)
        n = min(_HOST_BLOCK, hi - start)
        _refuse_overflow(overflow[:n], in_dim, out_dim, seed, width)
        rows, signs = np.asarray(rows[:n]), np.asarray(signs[:n])
        kept = signs != 0
        columns = np.broadcast_to(np.arange(start, start + n, dtype=np.int64)[:, None], rows.shape)
        yield columns[kept], rows[kept], signs[kept].astype(np.float32)


def project_on_host(x: jax.Array, in_dim: int, out_dim: int, seed: int) -> jax.Array:
    """``x (B, in_dim) @ R`` computed by scipy's sparse product on the host, one thread per column shard.

    The CPU kernel of the projection: XLA's CPU gathers run the column-stored product several times slower.
    Inside ``jit`` it is a ``pure_callback``; the matrix is built when this is traced, not in the first call.
    """
    host_projection(in_dim, out_dim, seed)

    def product(block):
        block = np.ascontiguousarray(block, np.float32)
        matrices = host_projection(in_dim, out_dim, seed)  # rebuilt here only if evicted from the cache
        return np.concatenate(list(_host_pool().map(lambda m: block @ m, matrices)), axis=1)

    return jax.pure_callback(product, jax.ShapeDtypeStruct((x.shape[0], out_dim), jnp.float32),
                             x.astype(jnp.float32))


def _host_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@functools.cache
def _host_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(_host_threads(), thread_name_prefix="jaxbrain-projection")
