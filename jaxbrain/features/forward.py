"""The jitted, data-parallel forward of an extraction: every requested layer of one batch, reduced on device.

One compiled step per (model, layer plans, mesh, dtypes) runs the model on a batch split over the mesh's data
axis and reduces each layer as its plan says (pooled, token map, flattened, projected) before anything leaves
the device. Compiled steps are kept in a small cache so that repeated extractions with the same model and
shapes compile once.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxbrain import sharding
from jaxbrain.features.plan import LayerPlan, plan_layers
from jaxbrain.features.projection import (PROJECTION_DIM, check_generated, host_projection, project,
                                          project_generated, project_on_host, projection_scale, sparse_projection)

_STEPS: collections.OrderedDict = collections.OrderedDict()
_STEPS_KEPT = 16  # compiled steps kept (a sweep over many models would otherwise keep them all)
PROJECTION_KERNELS = ("host", "gather", "generate")
# 2-core CPU, batch 32, 8 / 16 / 32 rows at once: ResNet-50 pooled forward 14.5 / 13.5 / 11.4 img/s, but the
# host projection of 12 ViT-S blocks 23.1 / 10.9 / - ms/img; ConvNeXt-S extraction peak 1.7 GB at 16, 3.4 at 64
CPU_MICRO_BATCH = 16


def traced(name: str, body: Callable) -> Callable:
    """Every step body passes through here before it is compiled (identity). Tests replace it, e.g. with
    ``chex.assert_max_traces``, to pin how often each step ``name`` is traced."""
    return body


def compiled_step(key: Hashable, build: Callable[[], Callable]) -> Callable:
    """The step cached under ``key``, made by ``build()`` on first use (least recently used ones dropped)."""
    if key in _STEPS:
        _STEPS.move_to_end(key)
        return _STEPS[key]
    _STEPS[key] = step = build()
    while len(_STEPS) > _STEPS_KEPT:
        _STEPS.popitem(last=False)
    return step


def cast_floating(state, compute_dtype: str | None):
    """``state`` with floating leaves cast to ``compute_dtype`` (unchanged for None)."""
    if compute_dtype is None:
        return state
    return jax.tree.map(lambda v: v.astype(compute_dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state)


def _reduce(a: jax.Array, plan: LayerPlan, project_flat: Callable | None, dtype) -> jax.Array:
    b = a.shape[0]
    if plan.kind == "pooled":
        out = a if a.ndim == 2 else jnp.mean(a.astype(jnp.float32), axis=tuple(range(1, a.ndim - 1)))
    elif plan.kind == "tokens":
        out = a.reshape(b, *plan.feature_shape)
    else:
        out = a.reshape(b, -1)
        if plan.projected:
            out = project_flat(out)
    return out.astype(dtype)


def _on_cpu(mesh) -> bool:
    return all(d.platform == "cpu" for d in mesh.devices.flat)


def resolve_projection_kernel(mesh, kernel: str = "auto") -> str:
    """"host" (scipy's sparse product through a callback) on CPU meshes, "gather" (stored indices, in the
    compiled step) on accelerators, for ``kernel="auto"``; otherwise ``kernel`` itself ("generate": the indices
    made in the step from the seed, a block of columns at a time, never stored)."""
    if kernel == "auto":
        return "host" if _on_cpu(mesh) else "gather"
    if kernel not in PROJECTION_KERNELS:
        raise ValueError(f"projection kernel must be 'auto' or one of {PROJECTION_KERNELS}, got {kernel!r}")
    return kernel


def _projections_for(plans: Sequence[LayerPlan], mesh, projection_dim: int, seed: int, kernel: str):
    """Per distinct input size: the gather kernel's indices replicated over ``mesh`` (the host kernel's
    matrices are built here too, into their cache); and the scales."""
    projections, scales = {}, []
    for plan in plans:
        if plan.projected and plan.flat_dim not in dict(scales):
            if kernel == "gather":
                proj = sparse_projection(plan.flat_dim, projection_dim, seed)
                projections[plan.flat_dim] = jax.device_put((proj.rows, proj.signs), sharding.replicated(mesh))
            elif kernel == "host":
                host_projection(plan.flat_dim, projection_dim, seed)
            else:
                check_generated(plan.flat_dim, projection_dim, seed)
            scales.append((plan.flat_dim, projection_scale(plan.flat_dim, projection_dim)))
    return projections, tuple(scales)


def micro_batches(local_batch: int, mesh) -> tuple[int, int]:
    """``(blocks, rows)``: the model sees ``rows`` images at a time, ``blocks`` times (``blocks * rows`` covers
    the local batch, padded). On CPU at most ``CPU_MICRO_BATCH`` rows: the peak memory falls with it and the rate
    does not; elsewhere the whole batch at once."""
    if not _on_cpu(mesh) or local_batch <= CPU_MICRO_BATCH:
        return 1, local_batch
    blocks = -(-local_batch // CPU_MICRO_BATCH)
    return blocks, -(-local_batch // blocks)


def _forward_step(graphdef, plans: tuple[LayerPlan, ...], scales: tuple, mesh, dtype: str,
                  compute_dtype: str | None, seed: int, kernel: str):
    def build():
        scale_of = dict(scales)

        def flat_projection(plan, projections):
            if not plan.projected:
                return None
            out_dim = plan.feature_shape[0]
            if kernel == "host":
                return lambda flat: project_on_host(flat, plan.flat_dim, out_dim, seed)
            if kernel == "generate":
                return lambda flat: project_generated(flat, plan.flat_dim, out_dim, seed)
            rows, signs = projections[plan.flat_dim]
            return lambda flat: project(flat, rows, signs, scale_of[plan.flat_dim], out_dim)

        def rows_through_model(state, images, projections):
            _, out = nnx.merge(graphdef, state)(images, train=False)
            return {plan.layer: _reduce(out[plan.layer], plan, flat_projection(plan, projections), dtype)
                    for plan in plans}

        def local(state, images, projections):
            if compute_dtype is not None:
                images = images.astype(compute_dtype)
            n = images.shape[0]
            blocks, rows = micro_batches(n, mesh)
            if blocks == 1:
                return rows_through_model(state, images, projections)
            padded = jnp.pad(images, ((0, blocks * rows - n),) + ((0, 0),) * (images.ndim - 1))
            out = jax.lax.map(lambda block: rows_through_model(state, block, projections),
                              padded.reshape(blocks, rows, *images.shape[1:]))
            return jax.tree.map(lambda a: a.reshape(blocks * rows, *a.shape[2:])[:n], out)

        mapped = jax.shard_map(traced("forward", local), mesh=mesh, in_specs=(P(), P(sharding.DATA_AXIS), P()),
                               out_specs=P(sharding.DATA_AXIS), check_vma=False)
        return jax.jit(mapped)

    return compiled_step(("forward", graphdef, plans, scales, mesh, dtype, compute_dtype, seed, kernel), build)


def forward_for_plans(model: nnx.Module, plans: Sequence[LayerPlan], mesh, *, dtype: str = "float32",
                      seed: int = 0, projection_dim: int = PROJECTION_DIM, compute_dtype: str | None = None,
                      projection_kernel: str = "auto"):
    """``forward(images) -> {layer: jax.Array}`` for the given layer plans (see :func:`make_forward`)."""
    graphdef, state = nnx.split(model)
    kernel = resolve_projection_kernel(mesh, projection_kernel)
    projections, scales = _projections_for(plans, mesh, projection_dim, seed, kernel)
    state = jax.device_put(cast_floating(state, compute_dtype), sharding.replicated(mesh))
    step = _forward_step(graphdef, tuple(plans), scales, mesh, dtype, compute_dtype, seed, kernel)

    def forward(images):
        with jax.set_mesh(mesh):
            return step(state, images, projections)

    return forward


def make_forward(model: nnx.Module, spec: Any, layers: Sequence[str], keep: str | Mapping[str, str] = "pooled", *,
                 mesh: jax.sharding.Mesh | None = None, dtype: str = "float32", seed: int = 0,
                 projection_dim: int = PROJECTION_DIM, compute_dtype: str | None = None,
                 projection_kernel: str = "auto"):
    """The jitted, data-parallel per-batch forward of :func:`extract` (without Gram accumulation).

    Returns ``forward(images) -> {layer: jax.Array}`` for a batch-sharded global images array (see
    :func:`jaxbrain.sharding.global_batch`); "gram" layers come back as flattened features. For benchmarks and
    for callers that feed their own batches.
    """
    mesh = sharding.data_mesh() if mesh is None else mesh
    plans = plan_layers(model, spec, layers, keep, projection_dim)
    return forward_for_plans(model, list(plans.values()), mesh, dtype=dtype, seed=seed,
                             projection_dim=projection_dim, compute_dtype=compute_dtype,
                             projection_kernel=projection_kernel)
