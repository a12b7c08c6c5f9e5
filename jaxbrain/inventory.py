"""Model inventory for scaling laws: parameters, forward FLOPs, pretraining samples D and compute C = D x FLOPs.

Parameters and FLOPs come from the model registry (XLA cost analysis of one image at the spec's crop size);
models are built abstractly (shapes only, no weights) where the module allows it. An inventory CSV with the
columns of `COLUMNS` can stand in for models the registry does not know (fine-tuned or external models).
"""

from __future__ import annotations

import os
import pathlib
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

COLUMNS = ("model", "family", "params", "flops", "samples", "compute")


def model_entry(name: str, samples: float | None = None) -> dict:
    """One inventory row for registry model `name`; `samples` overrides the spec's pretraining samples."""
    from flax import nnx

    from jaxbrain.models import registry

    spec = registry.get(name)
    try:
        model = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0)))
        params = registry.param_count(model)
        flops = registry.forward_flops(spec, model)
    except Exception:  # modules that cannot be traced abstractly are built for real
        model = spec.build(nnx.Rngs(0))
        params = registry.param_count(model)
        flops = registry.forward_flops(spec, model)
    d = samples if samples is not None else spec.pretraining_samples
    d = float("nan") if d is None else float(d)
    return dict(model=name, family=spec.family, params=float(params), flops=float(flops), samples=d,
                compute=d * float(flops))


def model_inventory(names: Iterable[str], samples: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Inventory rows (COLUMNS) for registry models; missing pretraining samples give NaN samples/compute."""
    samples = dict(samples or {})
    return pd.DataFrame([model_entry(n, samples.get(n)) for n in names], columns=list(COLUMNS))


def read_inventory(path: str | os.PathLike) -> pd.DataFrame:
    """An inventory CSV; needs model and at least one of params, flops, samples, compute.

    compute is filled as samples x flops where absent.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"inventory file not found: {path}")
    frame = pd.read_csv(path, dtype={"model": str})
    if "model" not in frame.columns:
        raise ValueError(f"inventory {path}: no 'model' column (columns: {list(frame.columns)})")
    for column in COLUMNS[1:]:
        if column not in frame.columns:
            frame[column] = np.nan if column != "family" else ""
    missing = frame["compute"].isna()
    frame.loc[missing, "compute"] = frame.loc[missing, "samples"] * frame.loc[missing, "flops"]
    duplicated = frame["model"][frame["model"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"inventory {path}: models listed twice: {', '.join(duplicated)}")
    return frame[list(COLUMNS)]


def inventory_for(models: Iterable[str], path: str | os.PathLike | None = None,
                  samples: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Inventory of `models`: rows from the CSV at `path` first, the registry for the rest.

    A model neither in the CSV nor in the registry is an error naming it.
    """
    models = list(dict.fromkeys(models))
    known = read_inventory(path) if path else pd.DataFrame(columns=list(COLUMNS))
    rest = [m for m in models if m not in set(known["model"])]
    if rest:
        from jaxbrain.models import registry

        unknown = [m for m in rest if m not in registry.names()]
        if unknown:
            raise KeyError(f"models {unknown} are neither in the inventory file {path} nor in the registry "
                           f"(known: {', '.join(registry.names())})")
        known = pd.concat([known, model_inventory(rest, samples)], ignore_index=True) if len(known) else \
            model_inventory(rest, samples)
    return known[known["model"].isin(models)].reset_index(drop=True)
