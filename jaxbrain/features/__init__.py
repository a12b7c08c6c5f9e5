"""Activations of many layers for many stimuli: Gram matrices, sparse random projections, stored features.

:func:`extract` runs one jitted, data-parallel forward per batch that returns every requested layer, and keeps
per layer one of the :data:`KINDS`: the exact Gram matrix ``K = X X^T`` (:mod:`.gram`), the reference's sparse
random projection (:mod:`.projection`), or the raw, pooled or token-map activations (:mod:`.plan`). With an
out_dir, results are files written batch by batch and the run resumes where it stopped (:mod:`.store`, which also
holds the package's one atomic file writer). The modules:

- :mod:`.plan`: what is kept of each layer, and its shape;
- :mod:`.projection`: the sparse random projection, generated from a seed, and its two kernels (a host sparse
  product for CPUs, an in-step gather for accelerators);
- :mod:`.forward`: the compiled per-batch forward with on-device reduction (:func:`make_forward`);
- :mod:`.gram`: Gram accumulation on the devices, with the feature row sums (:func:`load_gram`);
- :mod:`.store`: atomic files, rows written positionally, ``progress.json``;
- :mod:`.outputs`: where each batch's layers go, with write-behind;
- :mod:`.extract`: the orchestration.
"""

from jaxbrain.features.extract import extract
from jaxbrain.features.forward import make_forward
from jaxbrain.features.gram import Gram, load_gram
from jaxbrain.features.plan import DTYPES, KINDS, LayerPlan, plan_layers, resolve_keep
from jaxbrain.features.projection import (PROJECTION_DIM, SparseProjection, host_projection, project,
                                          project_on_host, projection_matrix, sparse_projection)
from jaxbrain.features.store import atomic_path, atomic_write, save_npy, write_json

__all__ = ["DTYPES", "KINDS", "PROJECTION_DIM", "Gram", "LayerPlan", "SparseProjection", "atomic_path", "atomic_write",
           "extract", "host_projection", "load_gram", "make_forward", "plan_layers", "project", "project_on_host",
           "projection_matrix", "resolve_keep",
           "save_npy", "sparse_projection", "write_json"]
