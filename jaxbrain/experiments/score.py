"""Scores backbones on neural benchmarks: ridge per layer, layer commitment, noise-normalised test scores.

Wires config -> benchmarks (`jaxbrain.catalog`) -> models -> `jaxbrain.pipeline` -> results store. Each (model,
benchmark) is one unit of work keyed by the fingerprint of everything that determines it (weights and data digests,
every scoring setting); finished layers are kept as arrays inside the unit, so a rerun with the same settings
resumes and a rerun with other settings computes new units beside the old ones (`on_change=refuse` stops instead).
Independent processes sharing a workdir claim units; processes of one jax.distributed run do each unit together
and the first of them writes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pathlib

import jax

from jaxbrain import catalog, claims, features, identity, inventory, maps, pipeline, plots, results, sharding, summary
from jaxbrain.models import loading
from jaxbrain.data import stimulus_cache

log = logging.getLogger(__name__)
_FORMAT = 3  # bumps when the meaning of stored scores changes


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


def score_unit(unit, spec, model: dict, benchmark: catalog.Benchmark, config, workdir: pathlib.Path,
               built: dict) -> None:
    """Every layer of one model on one benchmark, then the committed layers and what to warn about."""
    keep, out_dir = config.features.keep, workdir / "features" / unit.fingerprint
    order = pipeline.stimulus_order(benchmark.dataset) if benchmark.dataset else benchmark.rdms.stimulus_ids

    def extract(layer_names):
        if model["label"] not in built:
            built[model["label"]] = loading.build(spec, model)
        stimuli = benchmark.stimuli
        if config.get("stimulus_cache", True) and benchmark.digest:  # decoded once for every model of the sweep
            stimuli = _cached_stimuli(stimuli, order, spec.preprocessing, workdir / "stimuli", benchmark.digest)
        values = features.extract(built[model["label"]], spec, stimuli, order, layer_names, keep=keep,
                                  batch_size=config.batch_size, out_dir=out_dir,
                                  projection_dim=config.features.projection_dim, seed=config.features.seed,
                                  dtype=config.features.get("dtype", "float32"), progress=config.progress)
        return {layer: features.load_gram(out_dir, layer) if keep == "gram" else values[layer]
                for layer in layer_names}

    depths = dict(zip(spec.layers, spec.depths))
    if benchmark.rdms is not None:
        scores = pipeline.score_rdm_layers(extract(model["layers"]), benchmark.rdms,
                                           correlation=benchmark.correlation, depths=depths)
        unit.put_rows("layers", [r for layer in scores.layers for r in scores.layer_rows(layer, model["label"])],
                      flush=False)
        warnings = []
    else:
        scoring_config = pipeline.ScoringConfig.from_config(config)
        scores = pipeline.score_model(extract, benchmark.dataset, model["layers"], depths, scoring_config,
                                      gram=keep == "gram", cache=UnitLayers(unit, model["label"], config.seed))
        problem = pipeline.scoring_problem(benchmark.dataset, scoring_config)
        warnings = pipeline.warnings(scores, problem, scoring_config)
        if scores.has_test and unit.store.writer:
            maps.write_outputs(scores, benchmark.dataset, scoring_config.min_ceiling,
                               workdir / "targets" / model["label"] / benchmark.name)
    unit.write_json("warnings", warnings)
    unit.put_rows("test", scores.test_rows(model["label"], config.seed))


def _cached_stimuli(stimuli, order, preprocessing, directory: pathlib.Path, identity: str):
    """The stimulus cache, built by the writing process while the others of a distributed run wait."""
    def cached():
        return stimulus_cache.cached_stimuli(stimuli, order, preprocessing, directory, identity)

    built = cached() if sharding.is_writer() else None
    sharding.barrier("score: stimulus cache")
    return built if built is not None else cached()


def unit_settings(model: dict, benchmark: catalog.Benchmark, config) -> dict:
    return {"model": model, "benchmark": {"name": benchmark.name, "digest": benchmark.digest},
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
    store = results.ResultStore(workdir, writer=sharding.is_writer())
    digests = identity.DigestCache(workdir / ".cache" / "digests.json")
    benchmarks = catalog.load(config.benchmarks, config.planted.to_dict(), workdir / "data")
    existing = {unit.fingerprint: unit.record().get("settings", {}) for unit in store.units()}
    units, todo, built, provenance = [], [], {}, identity.provenance()
    for label, model_config in config.models.items():
        spec, model = loading.identify(label, model_config, digests)
        describe = inventory.Describer(label, spec.name, model["weights"], model_config.get("inventory") or {})
        for benchmark in benchmarks.values():
            settings = unit_settings(model, benchmark, config)
            unit = store.unit(identity.fingerprint(settings))
            _check_changes(existing, unit.fingerprint, settings, config.get("on_change", "new"))
            unit.describe({"settings": settings, "config": config.to_dict(), "provenance": provenance})
            if unit.inventory().get("given") != describe.given:
                unit.put_inventory(describe())
            units.append(unit)
            work = functools.partial(score_unit, unit, spec, model, benchmark, config, workdir, built)
            todo.append((f"{label} on {benchmark.name}", unit.claim_path, lambda u=unit: u.has_rows("test"), work))
    sharding.barrier("score: units described")
    if jax.process_count() > 1:  # one jax.distributed run: every process does every unit, the first one writes
        for _, _, done, work in todo:
            if not done():
                work()
            sharding.barrier("score: unit done")
    else:
        claims.do_units(todo)
    warnings = [w for unit in units for w in json.loads((unit.path / "warnings.json").read_text())]
    return _report(store, [unit.fingerprint for unit in units], benchmarks, list(config.models),
                   list(dict.fromkeys(warnings)), workdir)


def _report(store, fingerprints, benchmarks: dict, models: list[str], warnings: list[str], workdir) -> dict:
    table = store.table(fingerprints)
    roi_order = {name: benchmark.rois for name, benchmark in benchmarks.items()}
    headline = summary.summarise(table, {name: b.truth for name, b in benchmarks.items()}, roi_order, models)
    text = summary.format_table(headline, warnings)
    if store.writer:
        store.flush()
        results.write_json(workdir / "summary.json", {**headline, "warnings": warnings})
        for model in table.model.unique():
            plots.layer_profile(table[table.model == model], workdir / f"layer_profile_{model}.png")
            plots.layer_roi_heatmap(table[table.model == model], workdir / f"layer_roi_{model}.png")
        results.write_text(workdir / "summary.txt", text + "\n")
        print(text)
        print(f"\nresults: {workdir / 'results.csv'}\nplots: {workdir}/layer_profile_*.png, layer_roi_*.png")
    return {**headline, "warnings": warnings}
