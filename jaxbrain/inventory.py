"""Model inventory: what a scored model is, for scaling laws and for Table S2.

Every model carries its source (the controlled suite, timm, the user's own weights, or untrained), family and
architecture (registry name), N = parameters, forward FLOPs per image (2 x multiply-adds, XLA's cost analysis at
the spec's crop size), D = the pretraining dataset size (the number of training images of the subset it was
trained on, Eq. 8), the pretraining dataset, the objective (SUP, SSL, image-language, adversarial) and the
compute proxy C = D x FLOPs. N and FLOPs come from the registry; what weights cannot tell comes, in this order,
from the model's config entry (`inventory: {samples: ..., dataset: ..., objective: ..., source: ...}`), from a
metadata file beside the checkpoint (`<weights stem>.json`, as the pretrain experiment writes), or from the
registry's defaults. An inventory CSV with these columns can stand in for models outside the registry.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

COLUMNS = ("model", "source", "family", "architecture", "params", "flops", "samples", "dataset", "objective",
           "compute")
TEXT_COLUMNS = ("source", "family", "architecture", "dataset", "objective")
SOURCES = ("controlled", "timm", "own", "untrained")
OBJECTIVES = ("SUP", "SSL", "image-language", "adversarial")
HOW_TO_PROVIDE = ("give it in the model's config entry (`inventory: {samples: ..., dataset: ..., objective: ...}`), "
                  "in a metadata file beside its weights (`<weights stem>.json`, as the pretrain experiment writes), "
                  "or in an inventory CSV (`--config.inventory=FILE` with columns "
                  f"{', '.join(COLUMNS)})")


def checkpoint_metadata(weights: str | os.PathLike) -> dict:
    """The metadata file beside a checkpoint (`<stem>.json`), or {} when there is none."""
    if not weights:
        return {}
    path = pathlib.Path(weights).expanduser().with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"model metadata {path} is not valid JSON: {err}") from None


def _measured(spec) -> tuple[float, float]:
    """Parameters and forward FLOPs of a registry spec (built abstractly where the module allows it)."""
    from flax import nnx

    from jaxbrain.models import registry

    try:
        model = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0)))
        return float(registry.param_count(model)), float(registry.forward_flops(spec, model))
    except Exception:  # modules that cannot be traced abstractly are built for real
        model = spec.build(nnx.Rngs(0))
        return float(registry.param_count(model)), float(registry.forward_flops(spec, model))


def describe(label: str, name: str, *, pretrained: bool, given: Mapping[str, Any] | None = None) -> dict:
    """One inventory row for registry model `name` scored as `label`; `given` overrides what the registry says
    (see the module docstring); an untrained model has D = 0."""
    from jaxbrain.models import registry

    spec = registry.get(name)
    params, flops = _measured(spec)
    given = dict(given or {})
    samples = given.get("samples", spec.pretraining_samples if pretrained else 0.0)
    source = given.get("source", "own" if pretrained else "untrained")
    objective = given.get("objective", spec.objective if pretrained else "")
    if source not in SOURCES or objective not in (*OBJECTIVES, ""):
        raise ValueError(f"model {label}: inventory source {source!r} / objective {objective!r}; expected a source "
                         f"in {SOURCES} and an objective in {OBJECTIVES}")
    samples = float("nan") if samples is None else float(samples)
    return dict(model=label, source=source, family=spec.family, architecture=name, params=params, flops=flops,
                samples=samples, dataset=str(given.get("dataset", spec.dataset if pretrained else "")),
                objective=objective,
                compute=samples * flops)


class Describer:
    """The inventory row of one scored model, computed once (it compiles a forward for the FLOPs) and only when
    asked; `given` is what the config entry and the checkpoint's metadata file say."""

    def __init__(self, label: str, name: str, weights: str, entry: Mapping[str, Any]):
        self.label, self.name, self.weights = label, name, weights
        self.given = json.loads(json.dumps({**checkpoint_metadata(weights), **dict(entry)}, default=str))
        self._row: dict | None = None

    def __call__(self) -> dict:
        if self._row is None:
            self._row = {**describe(self.label, self.name, pretrained=bool(self.weights), given=self.given),
                         "given": self.given}
        return self._row


def model_entry(name: str, samples: float | None = None) -> dict:
    """The row of registry model `name` as pretrained per its spec; `samples` overrides D."""
    return describe(name, name, pretrained=True, given={} if samples is None else {"samples": samples})


def model_inventory(names: Iterable[str], samples: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Inventory rows for registry models; missing pretraining samples give NaN samples/compute."""
    samples = dict(samples or {})
    return pd.DataFrame([model_entry(n, samples.get(n)) for n in names], columns=list(COLUMNS))


def _complete(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    for column in COLUMNS[1:]:
        if column not in frame.columns:
            frame[column] = "" if column in TEXT_COLUMNS else np.nan
    for column in TEXT_COLUMNS:
        frame[column] = frame[column].fillna("").astype(str)
    missing = frame["compute"].isna()
    frame.loc[missing, "compute"] = frame.loc[missing, "samples"] * frame.loc[missing, "flops"]
    duplicated = frame["model"][frame["model"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"inventory {where}: models listed twice: {', '.join(duplicated)}")
    return frame[list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS]]


def read_inventory(path: str | os.PathLike) -> pd.DataFrame:
    """An inventory CSV; needs `model` and any of the other COLUMNS (compute filled as samples x flops)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"inventory file not found: {path}")
    frame = pd.read_csv(path, dtype={"model": str})
    if "model" not in frame.columns:
        raise ValueError(f"inventory {path}: no 'model' column (columns: {list(frame.columns)})")
    return _complete(frame, str(path))


def from_results(table: pd.DataFrame) -> pd.DataFrame:
    """The inventory the score experiment wrote into results.csv (one row per model; empty when absent)."""
    present = [c for c in COLUMNS if c in table.columns]
    if "params" not in present:
        return pd.DataFrame(columns=list(COLUMNS))
    rows = table[present].dropna(subset=["params"]).drop_duplicates("model")
    return _complete(rows.reset_index(drop=True), "of results.csv")


def inventory_for(models: Iterable[str], path: str | os.PathLike | None = None,
                  samples: Mapping[str, float] | None = None, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Inventory of `models`: an inventory CSV at `path` first, then the rows in `table` (results.csv), then the
    registry (by registry name). A model found nowhere is an error naming it and how to describe it."""
    models = list(dict.fromkeys(models))
    known = read_inventory(path) if path else pd.DataFrame(columns=list(COLUMNS))
    if table is not None:
        extra = from_results(table)
        known = pd.concat([known, extra[~extra["model"].isin(known["model"])]], ignore_index=True)
    rest = [m for m in models if m not in set(known["model"])]
    if rest:
        from jaxbrain.models import registry

        unknown = [m for m in rest if not registry.known(m)]
        if unknown:
            raise KeyError(f"models {unknown} are neither in an inventory nor registry names; {HOW_TO_PROVIDE}")
        registry_rows = model_inventory(rest, samples)
        known = pd.concat([known, registry_rows], ignore_index=True) if len(known) else registry_rows
    return known[known["model"].isin(models)].reset_index(drop=True)


def missing(inventory: pd.DataFrame, axes: Iterable[str]) -> str | None:
    """A one-line account of what the scaling axes need and the inventory lacks, or None when nothing is."""
    needs = {"compute": ("samples", "flops"), "samples": ("samples",), "params": ("params",),
             "neural_fraction": ("neural_fraction",)}
    lacking = {}
    for axis in axes:
        for column in needs.get(axis, ()):
            values = pd.to_numeric(inventory.get(column, pd.Series(np.nan, index=inventory.index)), errors="coerce")
            bad = inventory["model"][~(np.isfinite(values) & (values > 0))].tolist()
            if bad:
                lacking.setdefault(column, bad)
    if not lacking:
        return None
    parts = [f"{column} for {', '.join(models)}" for column, models in lacking.items()]
    return (f"no usable {'; '.join(parts)} (scaling over {', '.join(axes)} needs a pretraining dataset size D = "
            f"'samples' and forward 'flops' > 0; untrained models have D = 0); {HOW_TO_PROVIDE}")
