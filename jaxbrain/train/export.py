"""Trained models as files the score experiment loads, with what scaling laws need to know about them.

``<stem>.safetensors`` is the model's PyTorch-layout state dict (:func:`jaxbrain.models.convert.to_state_dict`,
the layout every registry spec's ``load_weights`` reads), so ``configs/score.py:model=NAME,weights=PATH``
scores it unchanged. ``<stem>.json`` beside it records the registry name, the number of classes, N (trained
parameters, :func:`jaxbrain.models.registry.param_count`), forward FLOPs per image (XLA's cost analysis at
the spec's crop size), D (pretraining images) and the compute proxy C = D x FLOPs_fwd (Eq. 8), plus the run's
settings; :func:`inventory_row` gives the same numbers as a row of a model-inventory CSV
(:data:`jaxbrain.inventory.COLUMNS`). Both files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Mapping
from typing import Any

from flax import nnx

from jaxbrain import results
from jaxbrain.models import convert, registry


def inventory_row(label: str, spec: registry.ModelSpec, model: nnx.Module, samples: float, dataset: str,
                  objective: str = "SUP") -> dict:
    """One model-inventory row (:data:`jaxbrain.inventory.COLUMNS`) for a model trained here."""
    flops = registry.forward_flops(spec, model)
    return dict(model=label, source="controlled", family=spec.family, architecture=spec.name,
                params=float(registry.param_count(model)), flops=float(flops), samples=float(samples),
                dataset=dataset, objective=objective, compute=float(samples) * float(flops))


def export(model: nnx.Module, stem, metadata: Mapping[str, Any]) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``stem.safetensors`` (weights) and ``stem.json`` (``metadata``) atomically; returns both paths."""
    from safetensors.numpy import save_file

    stem = pathlib.Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights = stem.with_suffix(".safetensors")
    fd, tmp = tempfile.mkstemp(dir=stem.parent, prefix=f".{weights.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(convert.to_state_dict(model), tmp)
        os.replace(tmp, weights)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    meta = stem.with_suffix(".json")
    results.write_json(meta, dict(metadata, weights=weights.name))
    return weights, meta


def read_metadata(stem) -> dict | None:
    """The metadata of an export, or None when it is absent or unreadable (an unfinished export)."""
    meta = pathlib.Path(stem).with_suffix(".json")
    weights = pathlib.Path(stem).with_suffix(".safetensors")
    if not (meta.is_file() and weights.is_file()):
        return None
    try:
        return json.loads(meta.read_text())
    except json.JSONDecodeError:
        return None
