"""Activations of many layers for many stimuli: Gram matrices, sparse random projections, stored features.

:func:`extract` runs one jitted, data-parallel forward per batch that returns every requested layer, and
keeps per layer one of

``"gram"``
    the exact Gram matrix ``K = X X^T`` over all stimuli (X = flattened activations), for kernel ridge.
    Each new batch ``x_b`` is stored on the device (rows spread over the data axis, in ``dtype``) and
    multiplied with every stored row, giving rows ``K[b, :b_end]`` of the lower block triangle; the upper
    triangle is its transpose. Device memory is the stored features, ``N x D`` in ``dtype`` (split over the
    devices), and host memory one ``N x N`` float32 matrix. An exact Gram cannot avoid holding all of
    ``X``: for ``D > N`` nothing smaller determines ``X X^T`` rows of later stimuli. Storing ``X`` on the
    device avoids a second pass over the stimuli (a second forward costs far more than the memory) and
    over the disk. Each batch multiplies with the whole store (unfilled rows are zeros), ``B x N x D``
    multiply-adds with one static shape; a triangular schedule would halve that at the cost of
    per-batch shapes.
    With ``out_dir`` the stored features are also written to disk so an interrupted run can refill the
    device store and continue; the file is removed once the Gram matrix is complete.
``"projection"``
    the reference's sparse random projection of layers with ``D > projection_dim`` (density
    ``1/sqrt(D)``, entries ``+-sqrt(1/density)/sqrt(projection_dim)``); smaller layers are kept raw. The
    matrix is never dense: each output column's non-zero rows are generated from its own counter-based key
    (``fold_in(key(seed), column)``) by geometric gap sampling, which draws exactly the Bernoulli(density)
    pattern of the reference, and is applied on the device as a gather. It depends only on ``(D,
    projection_dim, seed)``, never on the batch size or the devices.
``"raw"`` / ``"pooled"`` / ``"tokens"``
    flattened activations; the spatial or token mean ``(C,)``; or a token map ``(T, C)`` (conv maps give
    ``T = H * W``).

With ``out_dir``, results are ``.npy`` files (opened memory-mapped when returned) written batch by batch with
positional writes (so they do not stay resident in memory), with ``progress.json`` rewritten atomically after
every batch: a rerun continues from the last finished batch and skips finished layers.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxbrain import sharding
from jaxbrain.data import stimuli as stimulus_pipeline

KINDS = ("gram", "projection", "raw", "pooled", "tokens")
DTYPES = ("float32", "float16")
PROJECTION_DIM = 30000
_PROJECTION_CHUNK = 512  # output columns gathered at once by `project`
_FORMAT = 1

# Number of times each jitted function body was traced (tests pin one compile per shape with it).
TRACE_COUNTS: collections.Counter = collections.Counter()


# ---------------------------------------------------------------------------------------------------------
# Sparse random projection
# ---------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------
# Per-layer plan
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LayerPlan:
    layer: str
    kind: str
    activation_shape: tuple[int, ...]  # per stimulus
    feature_shape: tuple[int, ...]  # per stimulus, as stored (for gram: the flattened D)

    @property
    def projected(self) -> bool:
        return self.kind == "projection" and self.feature_shape[0] < math.prod(self.activation_shape)

    @property
    def flat_dim(self) -> int:
        return math.prod(self.activation_shape)


def resolve_keep(keep: str | Mapping[str, str], layers: Sequence[str]) -> dict[str, str]:
    """Per-layer kind from one kind for all layers or a mapping layer -> kind (every layer named)."""
    if isinstance(keep, str):
        mapping = {layer: keep for layer in layers}
    else:
        missing = [layer for layer in layers if layer not in keep]
        if missing:
            raise ValueError(f"keep mapping names no kind for layers {missing}")
        mapping = {layer: keep[layer] for layer in layers}
    bad = {layer: kind for layer, kind in mapping.items() if kind not in KINDS}
    if bad:
        raise ValueError(f"unknown keep kind(s) {bad}; choose from {KINDS}")
    return mapping


def _feature_shape(kind: str, shape: tuple[int, ...], projection_dim: int) -> tuple[int, ...]:
    flat = math.prod(shape)
    if kind in ("raw", "gram"):
        return (flat,)
    if kind == "projection":
        return (projection_dim,) if flat > projection_dim else (flat,)
    if kind == "pooled":
        return (shape[-1],)
    # tokens
    if len(shape) == 1:
        return (1, shape[0])
    return (math.prod(shape[:-1]), shape[-1])


def _reduce(a: jax.Array, plan: LayerPlan, projection, dtype) -> jax.Array:
    b = a.shape[0]
    if plan.kind == "pooled":
        out = a if a.ndim == 2 else jnp.mean(a.astype(jnp.float32), axis=tuple(range(1, a.ndim - 1)))
    elif plan.kind == "tokens":
        out = a.reshape(b, *plan.feature_shape)
    else:
        out = a.reshape(b, -1)
        if plan.projected:
            rows, signs, scale = projection
            out = project(out, rows, signs, scale, plan.feature_shape[0])
    return out.astype(dtype)


# ---------------------------------------------------------------------------------------------------------
# Jitted steps (cached so that repeated calls with the same model and shapes compile once)
# ---------------------------------------------------------------------------------------------------------
_STEP_CACHE: collections.OrderedDict = collections.OrderedDict()
_STEP_CACHE_SIZE = 16  # compiled steps kept (a sweep over many models would otherwise keep them all)


def _cache_put(key, fn):
    _STEP_CACHE[key] = fn
    while len(_STEP_CACHE) > _STEP_CACHE_SIZE:
        _STEP_CACHE.popitem(last=False)
    return fn


def _forward_step(graphdef, plans: tuple[LayerPlan, ...], scales: tuple, mesh, dtype: str,
                  compute_dtype: str | None = None):
    key = ("forward", graphdef, plans, scales, mesh, dtype, compute_dtype)
    if key not in _STEP_CACHE:
        scale_of = dict(scales)

        def local(state, images, projections):
            TRACE_COUNTS["forward"] += 1
            if compute_dtype is not None:
                images = images.astype(compute_dtype)
            _, out = nnx.merge(graphdef, state)(images, train=False)
            result = {}
            for plan in plans:
                proj = None
                if plan.projected:
                    rows, signs = projections[plan.flat_dim]
                    proj = (rows, signs, scale_of[plan.flat_dim])
                result[plan.layer] = _reduce(out[plan.layer], plan, proj, dtype)
            return result

        mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(sharding.DATA_AXIS), P()),
                               out_specs=P(sharding.DATA_AXIS), check_vma=False)
        return _cache_put(key, jax.jit(mapped))
    _STEP_CACHE.move_to_end(key)
    return _STEP_CACHE[key]


def _gram_step(mesh, with_products: bool):
    key = ("gram", mesh, with_products)
    if key not in _STEP_CACHE:
        axis = sharding.DATA_AXIS

        def local(store, x, slot):
            TRACE_COUNTS["gram" if with_products else "gram_store"] += 1
            store = jax.lax.dynamic_update_slice(store, x.astype(store.dtype), (slot, 0))
            if not with_products:
                return store
            everyone = jax.lax.all_gather(x.astype(store.dtype), axis, tiled=True)  # (B, D)
            return store, jnp.einsum("bd,sd->bs", everyone, store, preferred_element_type=jnp.float32)

        out_specs = (P(axis), P(None, axis)) if with_products else P(axis)
        mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis), P()), out_specs=out_specs,
                               check_vma=False)
        return _cache_put(key, jax.jit(mapped, donate_argnums=0))
    _STEP_CACHE.move_to_end(key)
    return _STEP_CACHE[key]


# ---------------------------------------------------------------------------------------------------------
# Output storage
# ---------------------------------------------------------------------------------------------------------
class _Rows:
    """An (N, ...) array filled by contiguous row slabs: in memory, or a .npy file written positionally."""

    def __init__(self, shape: tuple[int, ...], dtype, path: pathlib.Path | None, fresh: bool):
        self.shape, self.dtype, self.path = shape, np.dtype(dtype), path
        self.row_bytes = self.dtype.itemsize * math.prod(shape[1:])
        if path is None:
            self.array = np.zeros(shape, self.dtype)
            return
        self.array = None
        if not fresh and not path.exists():
            raise FileNotFoundError(f"{path}: missing, but progress.json records rows written to it; "
                                    "delete progress.json or use another out_dir")
        if fresh:
            header = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=shape)
            del header
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            file_shape, _, file_dtype = read_header(f)
            self.offset = f.tell()
        if tuple(file_shape) != tuple(shape) or file_dtype != self.dtype:
            raise ValueError(f"{path}: holds {file_dtype} {file_shape}, expected {self.dtype} {shape}; "
                             "delete it or use another out_dir")
        self.file = open(path, "r+b")

    def write(self, start: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, self.dtype)
        if self.array is not None:
            self.array[start:start + rows.shape[0]] = rows
        else:
            os.pwrite(self.file.fileno(), rows.tobytes(), self.offset + start * self.row_bytes)

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.array is not None:
            return self.array[start:stop]
        data = os.pread(self.file.fileno(), (stop - start) * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(stop - start, *self.shape[1:])

    def flush(self) -> None:
        if self.array is None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.array is None:
            self.file.close()


def _file_stem(layer: str, kind: str) -> str:
    return f"{layer.replace(os.sep, '_')}.{kind}"


def _atomic_json(path: pathlib.Path, record: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def _atomic_save(path: pathlib.Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _ids_digest(ids: Sequence[str]) -> str:
    h = hashlib.sha1()
    for i in ids:
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()


def _load_progress(out_dir: pathlib.Path, ids_digest: str, n: int, model_name: str) -> dict:
    path = out_dir / "progress.json"
    if not path.exists():
        return {"format": _FORMAT, "n": n, "ids_sha1": ids_digest, "model": model_name, "layers": {}}
    record = json.loads(path.read_text())
    if record.get("ids_sha1") != ids_digest or record.get("n") != n:
        raise ValueError(f"{path}: was written for another list of stimulus ids ({record.get('n')} ids); "
                         "use another out_dir")
    if record.get("model") != model_name:
        raise ValueError(f"{path}: was written for model {record.get('model')!r}, not {model_name!r}")
    return record


# ---------------------------------------------------------------------------------------------------------
# extract
# ---------------------------------------------------------------------------------------------------------
def _layer_shapes(graphdef, state, crop: int) -> dict[str, tuple[int, ...]]:
    images = jax.ShapeDtypeStruct((1, crop, crop, 3), jnp.float32)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False)[1], state, images)
    return {name: tuple(v.shape[1:]) for name, v in out.items()}


def _cast_floating(state, compute_dtype: str | None):
    if compute_dtype is None:
        return state
    return jax.tree.map(lambda v: v.astype(compute_dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state)


def _projections_for(plans, mesh, projection_dim: int, seed: int):
    """Sparse projections, one per distinct input size, replicated over ``mesh``; and their scales."""
    projections, scales = {}, []
    for plan in plans:
        if plan.projected and plan.flat_dim not in projections:
            proj = sparse_projection(plan.flat_dim, projection_dim, seed)
            projections[plan.flat_dim] = jax.device_put((proj.rows, proj.signs), sharding.replicated(mesh))
            scales.append((plan.flat_dim, proj.scale))
    return projections, tuple(scales)


def plan_layers(model: nnx.Module, spec: Any, layers: Sequence[str], keep: str | Mapping[str, str] = "gram",
                projection_dim: int = PROJECTION_DIM) -> dict[str, LayerPlan]:
    """What ``extract`` keeps of each layer: its kind, activation shape and stored shape per stimulus."""
    kinds = resolve_keep(keep, layers)
    graphdef, state = nnx.split(model)
    shapes = _layer_shapes(graphdef, state, spec.preprocessing.crop)
    unknown = [layer for layer in layers if layer not in shapes]
    if unknown:
        name = getattr(spec, "name", type(model).__name__)
        raise KeyError(f"model {name!r} has no layers {unknown}; its layers are {sorted(shapes)}")
    return {layer: LayerPlan(layer, kinds[layer], shapes[layer],
                             _feature_shape(kinds[layer], shapes[layer], projection_dim)) for layer in layers}


def make_forward(model: nnx.Module, spec: Any, layers: Sequence[str], keep: str | Mapping[str, str] = "pooled", *,
                 mesh: jax.sharding.Mesh | None = None, dtype: str = "float32", seed: int = 0,
                 projection_dim: int = PROJECTION_DIM, compute_dtype: str | None = None):
    """The jitted, data-parallel per-batch forward of :func:`extract` (without Gram accumulation).

    Returns ``forward(images) -> {layer: jax.Array}`` for a batch-sharded global images array (see
    :func:`jaxbrain.sharding.global_batch`); "gram" layers come back as flattened features. For benchmarks and
    for callers that feed their own batches.
    """
    mesh = sharding.data_mesh() if mesh is None else mesh
    plans = plan_layers(model, spec, layers, keep, projection_dim)
    graphdef, state = nnx.split(model)
    projections, scales = _projections_for(plans.values(), mesh, projection_dim, seed)
    state = jax.device_put(_cast_floating(state, compute_dtype), sharding.replicated(mesh))
    step = _forward_step(graphdef, tuple(plans.values()), scales, mesh, dtype, compute_dtype)

    def forward(images):
        with jax.set_mesh(mesh):
            return step(state, images, projections)

    return forward


def extract(model: nnx.Module, spec: Any, stimuli: Any, ids: Sequence[str], layers: Sequence[str], *,
            keep: str | Mapping[str, str] = "gram", batch_size: int = 64, out_dir: str | os.PathLike | None = None,
            dtype: str = "float32", seed: int = 0, progress: bool = True, mesh: jax.sharding.Mesh | None = None,
            projection_dim: int = PROJECTION_DIM, num_threads: int = 4, num_workers: int = 0,
            compute_dtype: str | None = None) -> dict[str, np.ndarray]:
    """Activations of ``layers`` for the stimuli ``ids``, kept per layer as ``keep`` says.

    Returns ``layer -> array`` in ``ids`` order: ``(N, N)`` float32 Gram matrices for "gram", ``(N, D')``
    features in ``dtype`` otherwise (``(N, T, C)`` for "tokens"). ``model(images, train=False)`` must return
    ``(logits, out)``; images are preprocessed by ``spec.preprocessing``. Batches of ``batch_size`` (rounded
    up to a multiple of the devices on ``mesh``, default: all devices) are split over the mesh's data axis.
    With ``out_dir`` the results are files there (returned memory-mapped) and the run is resumable.
    ``projection_dim`` is the reference's 30,000 unless changed; ``seed`` fixes the projection.
    ``num_threads`` / ``num_workers`` set the image decoding (see ``data.stimuli.iterate_batches``);
    ``compute_dtype`` (e.g. "bfloat16") casts parameters and images for the forward.
    """
    ids = [str(i) for i in ids]
    layers = list(layers)
    if not ids:
        raise ValueError("extract: no stimulus ids given")
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"extract: layers must be a non-empty list without repeats, got {layers}")
    if dtype not in DTYPES:
        raise ValueError(f"extract: dtype must be one of {DTYPES}, got {dtype!r}")
    if batch_size < 1 or projection_dim < 1:
        raise ValueError(f"extract: batch_size ({batch_size}) and projection_dim ({projection_dim}) must be >= 1")
    plans = plan_layers(model, spec, layers, keep, projection_dim)
    mesh = sharding.data_mesh() if mesh is None else mesh
    n_dev = sharding.data_size(mesh)
    batch_rows = sharding.padded_size(batch_size, n_dev)
    n = len(ids)
    model_name = getattr(spec, "name", type(model).__name__)
    preprocessing = spec.preprocessing
    graphdef, state = nnx.split(model)

    out_path = None if out_dir is None else pathlib.Path(out_dir)
    writer = jax.process_index() == 0
    record = None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        record = _load_progress(out_path, _ids_digest(ids), n, model_name)
    settings = {"dtype": dtype, "seed": seed, "projection_dim": projection_dim}

    results: dict[str, np.ndarray] = {}
    pending: list[LayerPlan] = []
    done_rows: dict[str, int] = {}
    for layer in layers:
        plan = plans[layer]
        entry_key = _file_stem(layer, plan.kind)
        entry = None if record is None else record["layers"].get(entry_key)
        if entry is not None:
            changed = {k: (entry[k], v) for k, v in settings.items() if entry.get(k) != v}
            if changed:
                raise ValueError(f"{out_path / 'progress.json'}: layer {layer!r} ({plan.kind}) was extracted "
                                 f"with other settings {changed} (stored, requested); use another out_dir")
            if entry["finished"]:
                results[layer] = np.load(out_path / entry["file"], mmap_mode="r")
                continue
        done_rows[layer] = 0 if entry is None else int(entry["rows_done"])
        pending.append(plan)
    if not pending:
        return {layer: results[layer] for layer in layers}

    start = min(done_rows[p.layer] for p in pending)
    outputs: dict[str, _Rows] = {}
    gram_stores: dict[str, _Rows] = {}
    for plan in pending:
        stem = _file_stem(plan.layer, plan.kind)
        fresh = done_rows[plan.layer] == 0
        if plan.kind == "gram":
            path = None if out_path is None else out_path / f"{stem}.partial.npy"
            outputs[plan.layer] = _Rows((n, n), np.float32, path, fresh)
            feat_path = None if out_path is None else out_path / f"{stem}.features.npy"
            if out_path is not None:
                gram_stores[plan.layer] = _Rows((n, plan.flat_dim), dtype, feat_path, fresh)
        else:
            path = None if out_path is None else out_path / f"{stem}.npy"
            outputs[plan.layer] = _Rows((n, *plan.feature_shape), dtype, path, fresh)
        if record is not None:
            record["layers"][stem] = {"layer": plan.layer, "kind": plan.kind, **settings, "rows_done": start,
                                      "finished": False, "file": f"{stem}.npy"}

    if record is not None and writer:
        _atomic_json(out_path / "progress.json", record)

    projections, scales = _projections_for(pending, mesh, projection_dim, seed)

    with jax.set_mesh(mesh):
        state = jax.device_put(_cast_floating(state, compute_dtype), sharding.replicated(mesh))
        step = _forward_step(graphdef, tuple(pending), scales, mesh, dtype, compute_dtype)
        rows_lo, rows_hi = sharding.process_rows(mesh, batch_rows)
        local_batch = batch_rows // n_dev
        num_steps = -(-start // batch_rows) + -(-(n - start) // batch_rows)
        slots_local = num_steps * local_batch

        # Device stores of the gram layers, refilled from disk on resume.
        stores, slot_index = {}, np.full(n_dev * slots_local, -1, np.int64)
        for plan in pending:
            if plan.kind == "gram":
                stores[plan.layer] = jax.device_put(jnp.zeros((n_dev * slots_local, plan.flat_dim), dtype),
                                                    sharding.batch_sharding(mesh))
        step_no = 0
        put = _gram_step(mesh, with_products=False)
        for lo in range(0, start, batch_rows):
            hi = min(lo + batch_rows, start)
            for layer in stores:
                block = np.zeros((batch_rows, plans[layer].flat_dim), dtype)
                block[:hi - lo] = gram_stores[layer].read(lo, hi)
                stores[layer] = put(stores[layer], sharding.global_batch(block[rows_lo:rows_hi], mesh),
                                    jnp.int32(step_no * local_batch))
            _assign_slots(slot_index, lo, hi, step_no, local_batch, slots_local)
            step_no += 1

        gram = _gram_step(mesh, with_products=True)
        batches = stimulus_pipeline.iterate_batches(
            stimuli, ids, preprocessing, batch_rows, start=start, rows=(rows_lo, rows_hi),
            num_threads=num_threads, num_workers=num_workers)
        sink = _Sink(n, outputs, gram_stores, record, out_path, writer,
                     [_file_stem(p.layer, p.kind) for p in pending], _progress_bar(progress, n, start, model_name))
        in_flight = None
        for b, batch in enumerate(batches):
            lo = start + b * batch_rows
            hi = min(lo + batch_rows, n)
            images = sharding.global_batch(np.asarray(batch["image"], np.float32), mesh)
            feats = step(state, images, projections)
            _assign_slots(slot_index, lo, hi, step_no, local_batch, slots_local)
            products = {}
            for layer in stores:
                stores[layer], products[layer] = gram(stores[layer], feats[layer], jnp.int32(step_no * local_batch))
            step_no += 1
            # Write the previous batch out while this one runs on the device.
            if in_flight is not None:
                sink.finish_batch(*in_flight)
            in_flight = (lo, hi, feats, products, slot_index.copy())
        if in_flight is not None:
            sink.finish_batch(*in_flight)
        sink.close()
        del stores

    for plan in pending:
        stem = _file_stem(plan.layer, plan.kind)
        rows = outputs[plan.layer]
        if plan.kind == "gram":
            partial = rows.read(0, n)
            full = _symmetrise_lower(partial if partial.flags.writeable else partial.copy())
            rows.close()
            if out_path is None:
                results[plan.layer] = full
                continue
            if writer:
                _atomic_save(out_path / f"{stem}.npy", full)
                record["layers"][stem]["finished"] = True
                _atomic_json(out_path / "progress.json", record)
                for scratch in (f"{stem}.partial.npy", f"{stem}.features.npy"):
                    (out_path / scratch).unlink(missing_ok=True)
                gram_stores[plan.layer].close()
            results[plan.layer] = full
        else:
            if out_path is None:
                results[plan.layer] = rows.array
                continue
            rows.close()
            if writer:
                record["layers"][stem]["finished"] = True
                _atomic_json(out_path / "progress.json", record)
            results[plan.layer] = np.load(out_path / f"{stem}.npy", mmap_mode="r")
    return {layer: results[layer] for layer in layers}


def _assign_slots(slot_index, lo, hi, step_no, local_batch, slots_local) -> None:
    """Record which stimulus each device-store slot of this step holds (device d gets batch rows d*lb..)."""
    for r in range(hi - lo):
        device, row = divmod(r, local_batch)
        slot_index[device * slots_local + step_no * local_batch + row] = lo + r


def _symmetrise_lower(k: np.ndarray, block: int = 2048) -> np.ndarray:
    """Fill the strict upper triangle of ``k`` in place from its lower triangle, block by block."""
    n = k.shape[0]
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        diag = k[i0:i1, i0:i1]
        k[i0:i1, i0:i1] = np.tril(diag) + np.tril(diag, -1).T
        k[i0:i1, i1:] = k[i1:, i0:i1].T
    return k


@dataclasses.dataclass
class _Sink:
    """Where finished batches go: output rows, gram feature rows, the progress record and bar."""

    n: int
    outputs: dict
    gram_stores: dict
    record: dict | None
    out_path: pathlib.Path | None
    writer: bool
    stems: list
    bar: Any

    def finish_batch(self, lo, hi, feats, products, slot_index) -> None:
        count = hi - lo
        filled = slot_index >= 0
        for layer, rows in self.outputs.items():
            if layer in products:
                block = sharding.to_host(products[layer])[:count]
                k_rows = np.zeros((count, self.n), np.float32)
                k_rows[:, slot_index[filled]] = block[:, filled]
                if self.writer:
                    rows.write(lo, k_rows)
                if layer in self.gram_stores and self.writer:
                    self.gram_stores[layer].write(lo, sharding.to_host(feats[layer])[:count])
            elif self.writer:
                rows.write(lo, sharding.to_host(feats[layer])[:count])
        if self.record is not None and self.writer:
            for rows in (*self.outputs.values(), *self.gram_stores.values()):
                rows.flush()
            for stem in self.stems:
                entry = self.record["layers"][stem]
                entry["rows_done"] = max(entry["rows_done"], hi)
            _atomic_json(self.out_path / "progress.json", self.record)
        if self.bar is not None:
            self.bar.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_bar(enabled: bool, n: int, start: int, name: str):
    if not enabled or jax.process_index() != 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=n, initial=start, unit="img", desc=f"features {name}", smoothing=0.1)
