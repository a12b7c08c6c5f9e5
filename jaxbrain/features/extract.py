"""``extract``: plan the layers, resume what an out_dir holds, stream the batches through the forward, finish."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxbrain import sharding
from jaxbrain.data import stimuli as stimulus_pipeline
from jaxbrain.features.forward import forward_for_plans
from jaxbrain.features.outputs import Sink
from jaxbrain.features.plan import check_request, plan_layers
from jaxbrain.features.projection import PROJECTION_DIM, release_host_projections
from jaxbrain.features.store import Progress


def extract(model: Any, spec: Any, stimuli: Any, ids: Sequence[str], layers: Sequence[str], *,
            keep: str | Mapping[str, str] = "gram", batch_size: int = 64, out_dir: str | os.PathLike | None = None,
            dtype: str = "float32", seed: int = 0, progress: bool = True, mesh: jax.sharding.Mesh | None = None,
            projection_dim: int = PROJECTION_DIM, num_threads: int = 4, num_workers: int = 0,
            compute_dtype: str | None = None, projection_kernel: str = "auto") -> dict[str, np.ndarray]:
    """Activations of ``layers`` for the stimuli ``ids``, kept per layer as ``keep`` says (see ``features``).

    Returns ``layer -> array`` in ``ids`` order: ``(N, N)`` float32 Gram matrices for "gram", ``(N, D')``
    features in ``dtype`` otherwise (``(N, T, C)`` for "tokens"). ``model(images, train=False)`` must return
    ``(logits, out)``; images are preprocessed by ``spec.preprocessing``. Batches of ``batch_size`` (rounded up
    to a multiple of the devices on ``mesh``, default: all devices) are split over the mesh's data axis. With
    ``out_dir`` the results are files there (returned memory-mapped) and the run is resumable; Gram row sums
    are kept beside (``features.load_gram``). ``projection_dim`` is the reference's 30,000 unless changed;
    ``seed`` fixes the projection. ``num_threads`` / ``num_workers`` set the image decoding (see
    ``data.stimuli.iterate_batches``); ``compute_dtype`` (e.g. "bfloat16") casts parameters and images.
    ``projection_kernel``: "host" (scipy on the host, the default on CPU), "gather" (stored indices in the
    compiled step, the default on accelerators) or "generate" (indices made in the step, never stored); all
    make the same matrix.
    """
    ids, layers = check_request(ids, layers, dtype, batch_size, projection_dim)
    plans = plan_layers(model, spec, layers, keep, projection_dim)
    mesh = sharding.data_mesh() if mesh is None else mesh
    name = getattr(spec, "name", type(model).__name__)
    record = Progress(None if out_dir is None else pathlib.Path(out_dir), ids, name,
                      {"dtype": dtype, "seed": seed, "projection_dim": projection_dim},
                      writer=jax.process_index() == 0)
    results, pending, start = record.resume(list(plans.values()))
    if pending:
        batch_rows = sharding.padded_size(batch_size, sharding.data_size(mesh))
        forward = forward_for_plans(model, pending, mesh, dtype=dtype, seed=seed, projection_dim=projection_dim,
                                    compute_dtype=compute_dtype, projection_kernel=projection_kernel)
        sink = Sink(pending, mesh, len(ids), start, batch_rows, dtype, record,
                    _progress_bar(progress, len(ids), start, name))
        batches = stimulus_pipeline.iterate_batches(
            stimuli, ids, spec.preprocessing, batch_rows, start=start, rows=sharding.process_rows(mesh, batch_rows),
            num_threads=num_threads, num_workers=num_workers)
        for b, batch in enumerate(batches):
            lo = start + b * batch_rows
            images = sharding.global_batch(np.asarray(batch["image"], np.float32), mesh)
            sink.add(forward(images), lo, min(lo + batch_rows, len(ids)))
        results.update(sink.finish())
        release_host_projections()  # scoring comes next and needs the memory more than a rebuild costs time
        if out_dir is not None:
            sharding.barrier("features written")  # other processes may read the writer's files from here on
    return {layer: results[layer] for layer in layers}


def _progress_bar(enabled: bool, n: int, start: int, name: str):
    if not enabled or jax.process_index() != 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=n, initial=start, unit="img", desc=f"features {name}", smoothing=0.1)
