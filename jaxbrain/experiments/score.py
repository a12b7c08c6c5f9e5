"""Scores backbones on neural benchmarks: ridge per layer, layer commitment, noise-normalised test scores.

Wires config -> benchmarks (`jaxbrain.planted`, `jaxbrain.data.prepare`) -> models -> `jaxbrain.pipeline` ->
results store. Each (model, benchmark) is one unit of work keyed by the fingerprint of everything that determines
it (weights and data digests, every scoring setting); finished layers are kept as arrays inside the unit, so a
rerun with the same settings resumes and a rerun with other settings computes new units beside the old ones
(`on_change=refuse` stops instead). Units are claimed, so several processes can share one workdir.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pathlib

import jax
from jaxbrain import claims, features, identity, pipeline, planted, plots, results, summary
from jaxbrain.data import prepare
from jaxbrain.models import loading

log = logging.getLogger(__name__)
_FORMAT = 3  # bumps when the meaning of stored scores changes


def load_benchmarks(config, workdir: pathlib.Path) -> dict[str, tuple]:
    """name -> (dataset, planted truth or None) for every entry of `config.benchmarks`; names must be distinct."""
    loaded = {}
    for entry in config.benchmarks:
        if entry.startswith(planted.PREFIX) and ":" not in entry and not entry.endswith(".h5"):
            dataset, truth = planted.load_planted(entry, config.planted.to_dict(), workdir / "data")
        else:
            dataset, truth = prepare.load_entry(entry, workdir / "data"), None
        if dataset.name in loaded:
            raise ValueError(f"two benchmarks are named {dataset.name!r} ({entry!r} and an earlier entry); give "
                             "them distinct names, e.g. generic:DIR?name=NAME")
        loaded[dataset.name] = (dataset, truth)
    return loaded


class UnitLayers:
    """The pipeline's layer cache inside a results unit: arrays to resume from, rows for results.csv."""

    def __init__(self, unit: results.Unit, label: str, seed: int):
        self.unit, self.label, self.seed = unit, label, seed

    def get(self, layer):
        name = f"layer-{layer}"
        return pipeline.layer_scores_from_arrays(self.unit.arrays(name)) if self.unit.has_arrays(name) else None

    def put(self, layer, scores):
        self.unit.put_arrays(f"layer-{layer}", pipeline.layer_scores_to_arrays(scores.per_layer[layer]))
        self.unit.put_rows(f"layer-{layer}", scores.layer_rows(layer, self.label, self.seed))


def score_unit(unit, spec, model: dict, dataset, config, workdir: pathlib.Path, built: dict) -> None:
    """Every layer of one model on one benchmark, then the committed layers and what to warn about."""
    keep = config.features.keep

    def extract(layer_names):
        if model["label"] not in built:
            built[model["label"]] = loading.build(spec, model)
        return features.extract(built[model["label"]], spec, dataset.stimuli, pipeline.stimulus_order(dataset),
                                layer_names, keep=keep, batch_size=config.batch_size,
                                out_dir=workdir / "features" / unit.fingerprint,
                                projection_dim=config.features.projection_dim, seed=config.features.seed,
                                progress=config.progress)

    scoring_config = pipeline.ScoringConfig.from_config(config)
    scores = pipeline.score_model(extract, dataset, model["layers"], dict(zip(spec.layers, spec.depths)),
                                  scoring_config, gram=keep == "gram", cache=UnitLayers(unit, model["label"],
                                                                                        config.seed))
    warnings = pipeline.warnings(scores, pipeline.scoring_problem(dataset, scoring_config), scoring_config)
    results.write_json(unit.path / "warnings.json", warnings)
    unit.put_rows("test", scores.test_rows(model["label"], config.seed))


def unit_settings(model: dict, dataset, config) -> dict:
    return {"model": model, "benchmark": {"name": dataset.name, "digest": dataset.digest},
            "scoring": dataclasses.asdict(pipeline.ScoringConfig.from_config(config)),
            "features": config.features.to_dict(), "precision": str(jax.config.jax_default_matmul_precision),
            "format": _FORMAT}


def _check_changes(existing: dict[str, dict], fingerprint: str, settings: dict, policy: str) -> None:
    """Compares a unit's settings with the workdir's other units of the same model label and benchmark."""
    key = (settings["model"]["label"], settings["benchmark"]["name"])
    for other, old in existing.items():
        if other == fingerprint or (old.get("model", {}).get("label"), old.get("benchmark", {}).get("name")) != key:
            continue
        text = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in identity.differences(old, settings).items())
        if policy == "refuse":
            raise ValueError(f"{key[0]} on {key[1]} was scored in this workdir with other settings ({text}); "
                             "use another workdir, or on_change=new to score these settings beside the old ones")
        log.info("%s on %s: settings differ from unit %s (%s); scoring anew", *key, other, text)


def run(config, workdir: pathlib.Path) -> dict:
    workdir = pathlib.Path(workdir)
    store = results.ResultStore(workdir)
    digests = identity.DigestCache(workdir / ".cache" / "digests.json")
    benchmarks = load_benchmarks(config, workdir)
    existing = {unit.fingerprint: unit.record().get("settings", {}) for unit in store.units()}
    units, todo, built, provenance = [], [], {}, identity.provenance()
    for label, model_config in config.models.items():
        spec, model = loading.identify(label, model_config, digests)
        for dataset, _ in benchmarks.values():
            settings = unit_settings(model, dataset, config)
            unit = store.unit(identity.fingerprint(settings))
            _check_changes(existing, unit.fingerprint, settings, config.get("on_change", "new"))
            unit.describe({"settings": settings, "config": config.to_dict(), "provenance": provenance})
            units.append(unit)

            work = functools.partial(score_unit, unit, spec, model, dataset, config, workdir, built)
            todo.append((f"{label} on {dataset.name}", unit.claim_path, lambda u=unit: u.has_rows("test"), work))
    claims.do_units(todo)
    warnings = [w for unit in units for w in json.loads((unit.path / "warnings.json").read_text())]
    return _report(store.table([unit.fingerprint for unit in units]), benchmarks, list(config.models),
                   list(dict.fromkeys(warnings)), workdir)


def _report(table, benchmarks: dict, models: list[str], warnings: list[str], workdir: pathlib.Path) -> dict:
    roi_order = {name: dataset.rois for name, (dataset, _) in benchmarks.items()}
    headline = summary.summarise(table, {name: truth for name, (_, truth) in benchmarks.items()}, roi_order,
                                 models)
    headline["warnings"] = warnings
    results.write_json(workdir / "summary.json", headline)
    plot_paths = [plots.layer_profile(table[table.model == model], workdir / f"layer_profile_{model}.png")
                  for model in table.model.unique()]
    text = summary.format_table({k: v for k, v in headline.items() if k != "warnings"}, warnings)
    results.write_text(workdir / "summary.txt", text + "\n")
    print(text)
    print(f"\nresults: {workdir / 'results.csv'}\nplots: " + ", ".join(str(p) for p in plot_paths))
    return headline
