"""Training meshes and sharding rules: one code path from one CPU to a pod slice.

A training mesh has two axes, ``data`` and ``fsdp``, made by ``jax.make_mesh`` with their axis types given
(``AxisType.Auto``: the compiler propagates shardings from the inputs, outputs and constraints of the step, so
any model's code trains unchanged; with ``Explicit`` axes, sharding-typed operations such as ViT's
class-token concatenation of a replicated token with a batch-sharded sequence are refused).
The global batch is split over both axes together, so every device holds ``global_batch / n_devices`` rows;
parameters and optimizer state are sharded over ``fsdp`` only (fully sharded data parallelism, as big_vision's
``fsdp`` axis): with ``fsdp = 1`` this is plain data parallelism with replicated parameters.

Where each array lives is decided by rules from the config, tried in order on the array's path (``/``-joined,
e.g. ``params/blocks/3/mlp/fc1/kernel``; optimizer moments carry their parameter's path as a suffix)::

    "regex=spec"   spec: "auto" (the largest dimension divisible by the fsdp size, for arrays of at least
                   ``min_shard_size`` elements; replicated otherwise), "replicate", or one entry per dimension
                   joined by commas, each "data", "fsdp" or "-" (not split), e.g. ".*head/kernel=-,fsdp"

The first matching rule wins; an array no rule matches is replicated. Each process feeds only the rows its own
devices hold (:func:`process_rows`), and :func:`global_batch` assembles the global arrays from those local
rows with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jaxbrain import sharding

DATA, FSDP = "data", "fsdp"
BATCH_AXES = (DATA, FSDP)
DEFAULT_RULES = (".*=auto",)
MIN_SHARD_SIZE = 2 ** 14


def make_mesh(fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A (data, fsdp) mesh with Auto axes over ``devices`` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    if fsdp < 1 or len(devices) % fsdp:
        raise ValueError(f"fsdp={fsdp} must be >= 1 and divide the {len(devices)} devices")
    return jax.make_mesh((len(devices) // fsdp, fsdp), BATCH_AXES,
                         axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every device of the mesh."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def parse_rules(rules: Sequence[str]) -> list[tuple[re.Pattern, str]]:
    """``"regex=spec"`` strings -> (compiled regex, spec); a malformed rule is an error naming it."""
    parsed = []
    for rule in rules:
        pattern, sep, spec = str(rule).rpartition("=")
        if not sep or not pattern:
            raise ValueError(f"sharding rule {rule!r}: expected 'regex=spec'")
        entries = spec.split(",")
        if spec not in ("auto", "replicate") and any(e not in (DATA, FSDP, "-") for e in entries):
            raise ValueError(f"sharding rule {rule!r}: spec must be auto, replicate or per-dimension "
                             f"entries among data, fsdp, - (got {spec!r})")
        try:
            parsed.append((re.compile(pattern), spec))
        except re.error as err:
            raise ValueError(f"sharding rule {rule!r}: bad regex ({err})") from None
    return parsed


def _auto_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    candidates = [d for d in np.argsort(shape)[::-1] if shape[d] % fsdp == 0]
    if not candidates:
        return P()
    spec = [None] * len(shape)
    spec[int(candidates[0])] = FSDP
    return P(*spec)


def spec_for(path: str, shape: tuple[int, ...], rules, mesh: jax.sharding.Mesh,
             min_size: int = MIN_SHARD_SIZE) -> P:
    """The PartitionSpec of the array at ``path`` under parsed ``rules`` (see the module docstring)."""
    for pattern, spec in rules:
        if not pattern.fullmatch(path):
            continue
        if spec == "auto":
            return _auto_spec(shape, int(mesh.shape[FSDP]), min_size)
        if spec == "replicate":
            return P()
        entries = spec.split(",")
        if len(entries) != len(shape):
            raise ValueError(f"sharding rule {pattern.pattern}={spec} has {len(entries)} entries but {path} "
                             f"has shape {shape}")
        axes = [None if e == "-" else e for e in entries]
        for dim, axis in zip(shape, axes):
            if axis and dim % int(mesh.shape[axis]):
                raise ValueError(f"{path}: dimension {dim} is not divisible by the {mesh.shape[axis]} devices "
                                 f"of mesh axis {axis!r} (rule {pattern.pattern}={spec})")
        return P(*axes)
    return P()


def path_name(path) -> str:
    """``/``-joined readable form of a pytree key path."""
    parts = []
    for key in path:
        if getattr(key, "name", None) == "value":  # the array inside an nnx.Variable
            continue
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def tree_shardings(tree, mesh: jax.sharding.Mesh, rules: Sequence[str] = DEFAULT_RULES,
                   min_size: int = MIN_SHARD_SIZE):
    """NamedSharding for every array leaf of ``tree`` (arrays or ShapeDtypeStructs) from ``rules``."""
    parsed = parse_rules(rules)

    def one(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        return NamedSharding(mesh, spec_for(path_name(path), shape, parsed, mesh, min_size))

    return jax.tree_util.tree_map_with_path(one, tree)


def place(tree, shardings):
    """Host values (identical on every process) -> global arrays with ``shardings`` (works multi-process)."""
    def one(value, sharding):
        host = np.asarray(jax.device_get(value))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(one, tree, shardings)


def process_rows(mesh: jax.sharding.Mesh, global_batch_size: int) -> tuple[int, int]:
    """``(start, stop)``: the contiguous rows of a global batch that this process's devices hold."""
    flat = jax.sharding.Mesh(mesh.devices.reshape(-1), (sharding.DATA_AXIS,))  # the batch axes' device order
    return sharding.process_rows(flat, global_batch_size)


def global_batch(local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Global batch-sharded arrays assembled from this process's rows of every field of ``local``."""
    sharding = batch_sharding(mesh)
    out = {}
    for key, value in local.items():
        value = np.asarray(value)
        shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
        out[key] = jax.make_array_from_process_local_data(sharding, value, shape)
    return out
