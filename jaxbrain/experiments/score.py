"""Scores backbones on neural benchmarks: ridge per layer, layer commitment, noise-normalised test scores.

For each model and benchmark: features of every candidate layer over all of the benchmark's stimuli (an exact
Gram matrix, or the reference's sparse random projection), 5-fold outer CV per layer on the train split, the layer
with the best cross-subject CV score committed per ROI, refit on the whole train split, scored on the test split.
Writes results.csv, summary.json, layer-profile plots and a table in the log; a rerun skips finished work.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import numpy as np
import pandas as pd
from flax import nnx

from jaxbrain import features, metrics, plots, results, ridge, scoring
from jaxbrain.data import neural, sources, synthetic
from jaxbrain.data.stimulus_set import StimulusSet
from jaxbrain.models import registry

log = logging.getLogger(__name__)

PLANTED_PREFIX = "planted_"


# ---------------------------------------------------------------------------------------------------------------
# Benchmarks


def _planted(name: str, config, workdir: pathlib.Path) -> tuple[neural.NeuralDataset, dict | None]:
    """Generates (once) and loads a planted benchmark; its generator is `config.planted.generator`."""
    data_dir = workdir / "data"
    path, truth_path = data_dir / f"{name}.h5", data_dir / f"{name}.truth.json"
    settings = config.planted.to_dict()
    if not (path.is_file() and truth_path.is_file()):
        specs = {s.name: s for s in synthetic.default_specs(config.planted.scale)}
        if name not in specs:
            raise ValueError(f"unknown planted benchmark {name!r}; known: {sorted(specs)}")
        spec = specs[name]
        generator = registry.get(config.planted.generator)
        model = generator.build(rngs=nnx.Rngs(config.planted.seed))
        images = synthetic.generated_images(synthetic.images_needed(spec), seed=config.planted.seed)
        ids = [f"img{i:05d}" for i in range(len(images))]
        layer_features = features.extract(model, generator, StimulusSet.from_array(images, ids), ids,
                                          sorted(set(spec.roi_layers.values())), keep="raw", progress=False)
        planted = synthetic.plant(spec, layer_features, images, seed=config.planted.seed)
        neural.save(planted.dataset, path)
        results.write_json(truth_path, {**planted.truth(), "settings": settings})
    truth = json.loads(truth_path.read_text())
    if truth.get("settings") != settings:
        raise ValueError(f"{path} was generated with planted settings {truth.get('settings')}, not {settings}; "
                         "use another workdir")
    return neural.load(path), truth


def _from_release(reader: str, source: str, workdir: pathlib.Path) -> neural.NeuralDataset:
    """Converts (once) a public release with a registered reader, then loads the validated file."""
    if reader not in sources.READERS:
        raise ValueError(f"unknown dataset reader {reader!r}; known: {sorted(sources.READERS)}")
    path = workdir / "data" / f"{reader}.h5"
    if not path.is_file():
        source_dir = pathlib.Path(source).expanduser()
        if not source_dir.exists():
            raise FileNotFoundError(f"source of dataset {reader!r} not found: {source_dir}")
        neural.save(sources.READERS[reader](source_dir), path)
    return neural.load(path)


def load_benchmark(entry: str, config, workdir: pathlib.Path) -> tuple[neural.NeuralDataset, dict | None]:
    """A benchmark named in the config: `planted_*`, `reader:source_dir`, or a NeuralDataset HDF5 file."""
    if entry.startswith(PLANTED_PREFIX) and not entry.endswith(".h5"):
        return _planted(entry, config, workdir)
    reader, sep, source = entry.partition(":")
    if sep and not entry.endswith(".h5"):
        return _from_release(reader, source, workdir), None
    path = pathlib.Path(entry).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    return neural.load(path), None


# ---------------------------------------------------------------------------------------------------------------
# Models


def build_model(model_config) -> tuple[registry.ModelSpec, nnx.Module]:
    spec = registry.get(model_config.name)
    model = spec.build(rngs=nnx.Rngs(model_config.get("seed", 0)))
    weights = model_config.get("weights", "")
    if weights:
        if spec.load_weights is None:
            raise ValueError(f"model {spec.name} has no weight loader")
        path = pathlib.Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights for model {spec.name} not found: {path}")
        spec.load_weights(model, path)
    return spec, model


# ---------------------------------------------------------------------------------------------------------------
# Scoring one (model, benchmark)


def _stimulus_order(dataset: neural.NeuralDataset) -> list[str]:
    """Every stimulus of the benchmark once, in first-seen order over splits and subjects."""
    seen: dict[str, None] = {}
    for split in dataset.splits:
        for subject in dataset.subjects:
            seen.update(dict.fromkeys(map(str, dataset.ids(split, subject))))
    return list(seen)


def _row(**kw) -> dict[str, Any]:
    base = dict(subject="all", layer="", depth=np.nan, n_targets=0, alpha=np.nan, seed=0)
    base.update(kw)
    return base


def _subject_block(dataset, subject, position):
    train_ids = dataset.ids("train", subject)
    test_ids = dataset.ids("test", subject)
    return np.array([position[str(i)] for i in (*train_ids, *test_ids)]), len(train_ids)


def _layer_data(feats: np.ndarray, positions: np.ndarray, gram: bool) -> np.ndarray:
    return feats[np.ix_(positions, positions)] if gram else feats[positions]


def score_benchmark(label: str, spec: registry.ModelSpec, model: nnx.Module, layers: list[str],
                    dataset: neural.NeuralDataset, config, workdir: pathlib.Path, store: results.ResultStore):
    """CV rows for every layer, then test rows at the committed layer of each ROI; resumable per layer."""
    unknown = [layer for layer in layers if layer not in spec.layers]
    if unknown:
        raise ValueError(f"layers {unknown} are not candidate layers of {spec.name}: {list(spec.layers)}")
    depth = dict(zip(spec.layers, spec.depths))
    keep = config.features.keep
    gram = keep == "gram"
    alphas = np.asarray(config.ridge.alphas, dtype=np.float64)
    common = dict(model=label, benchmark=dataset.name, seed=config.seed)

    order = _stimulus_order(dataset)
    position = {stimulus_id: i for i, stimulus_id in enumerate(order)}
    blocks = {subject: _subject_block(dataset, subject, position) for subject in dataset.subjects}
    targets = {}
    for subject in dataset.subjects:
        for roi in dataset.rois:
            ceiling = dataset.ceiling(subject, roi)
            kept = scoring.kept_targets(ceiling, dataset.modality, config.min_ceiling)
            if not kept.any():
                raise ValueError(f"{dataset.name}: subject {subject}, ROI {roi}: no target passes the ceiling "
                                 f"threshold")
            targets[(subject, roi)] = (dataset.targets("train", subject, roi)[:, kept],
                                       dataset.targets("test", subject, roi)[:, kept], ceiling[kept])

    def extract(layer_names):
        return features.extract(model, spec, dataset.stimuli, order, layer_names, keep=keep,
                                batch_size=config.batch_size, out_dir=workdir / "features" / label / dataset.name,
                                projection_dim=config.features.projection_dim, seed=config.features.seed,
                                progress=config.progress)

    todo = [layer for layer in layers if not store.has((label, dataset.name, "cv", layer))]
    feats = extract(todo) if todo else {}
    for layer in layers:
        key = (label, dataset.name, "cv", layer)
        if store.has(key):
            continue
        rows = []
        for subject, (positions, n_train) in blocks.items():
            data = _layer_data(feats[layer], positions, gram)
            folds = scoring.kfold(n_train, config.cv.n_splits, config.cv.shuffle, config.seed)
            scores = scoring.score_layer(data, {roi: targets[(subject, roi)] for roi in dataset.rois}, gram=gram,
                                         folds=folds, alphas=alphas, alpha_per_target=config.ridge.alpha_per_target)
            for roi, score in scores.items():
                base = dict(common, subject=subject, roi=roi, layer=layer, depth=depth[layer],
                            n_targets=len(targets[(subject, roi)][2]))
                rows += [_row(**base, stage="cv", metric="r_nc", value=score.cv_score,
                              alpha=float(np.exp(np.mean(np.log(score.cv_alpha))))),
                         _row(**base, stage="cv", metric="r", value=float(np.mean(score.cv_r))),
                         _row(**base, stage="refit", metric="r_nc", value=float(np.nanmean(score.test_r_nc)),
                              alpha=score.test_alpha),
                         _row(**base, stage="refit", metric="r", value=float(np.nanmean(score.test_r)))]
        store.put(key, rows)
        log.info("%s / %s / %s scored", label, dataset.name, layer)

    test_key = (label, dataset.name, "test")
    if not store.has(test_key):
        rows = _test_rows(store, common, layers, dataset, depth, targets)
        if config.similarity:
            committed = {r["roi"]: r["layer"] for r in rows if r["stage"] == "test"}
            missing = sorted(set(committed.values()) - set(feats))
            committed_feats = {**feats, **(extract(missing) if missing else {})}
            rows += _similarity_rows(common, committed, committed_feats, blocks, targets, depth, gram, alphas,
                                     config.ridge.alpha_per_target)
        store.put(test_key, rows)


def _similarity_rows(common, committed, feats, blocks, targets, depth, gram, alphas, alpha_per_target
                     ) -> list[dict]:
    """RSA and CKA on the test split at each ROI's committed layer (DESIGN.md section 3, RSA / CKA).

    "c" variants compare the layer with the responses, "ve" variants the ridge predictions with the responses.
    RSA needs the features themselves (correlation distance), so with an exact Gram only CKA is computed for "c".
    """
    rows = []
    for subject, (positions, n_train) in blocks.items():
        for roi, layer in committed.items():
            y_train, y_test, _ = targets[(subject, roi)]
            data = _layer_data(feats[layer], positions, gram)
            final = [(np.arange(n_train), np.arange(n_train, len(positions)))]
            y_all = scoring.pad_targets(np.concatenate([y_train, y_test]))
            fit = ridge.fit_predict_splits(data, y_all, final, alphas, gram=gram, alpha_per_target=alpha_per_target)[0]
            predictions = np.asarray(fit.predictions)[:, : y_test.shape[1]]
            values = {"rsa_ve": metrics.rsa(predictions, y_test), "cka_ve": metrics.cka(predictions, y_test)}
            if gram:
                values["cka_c"] = metrics.cka_gram(data[n_train:, n_train:], y_test @ y_test.T)
            else:
                values["rsa_c"] = metrics.rsa(data[n_train:], y_test)
                values["cka_c"] = metrics.cka(data[n_train:], y_test)
            for metric, value in values.items():
                rows.append(_row(**common, subject=subject, roi=roi, layer=layer, depth=depth[layer], stage="test",
                                 metric=metric, value=float(value), n_targets=y_test.shape[1]))
    return rows


def _test_rows(store, common, layers, dataset, depth, targets) -> list[dict]:
    """Commits a layer per ROI from the stored CV rows; test rows are the committed layer's refit rows."""
    cv = pd.concat([store.get((common["model"], dataset.name, "cv", layer)) for layer in layers])
    cv["subject"] = cv["subject"].astype(str)
    cv["layer"] = cv["layer"].astype(str)
    rows = []
    for roi in dataset.rois:
        sel = cv[(cv.roi.astype(str) == roi) & (cv.stage == "cv") & (cv.metric == "r_nc")]
        by_layer = {layer: dict(zip(g.subject, g.value)) for layer, g in sel.groupby("layer")}
        committed = scoring.commit_layer(by_layer, layers)
        for layer in layers:
            rows.append(_row(**common, roi=roi, layer=layer, depth=depth[layer], stage="cv", metric="r_nc",
                             value=float(np.mean(list(by_layer[layer].values())))))
        refit = cv[(cv.roi.astype(str) == roi) & (cv.stage == "refit") & (cv.layer == committed)]
        for subject in dataset.subjects:
            ceiling = targets[(subject, roi)][2]
            base = dict(common, subject=subject, roi=roi, layer=committed, depth=depth[committed],
                        n_targets=len(ceiling))
            for metric in ("r", "r_nc"):
                match = refit[(refit.subject == subject) & (refit.metric == metric)].iloc[0]
                rows.append(_row(**base, stage="test", metric=metric, value=float(match.value),
                                 alpha=float(match.alpha) if metric == "r_nc" else np.nan))
            rows.append(_row(**base, stage="test", metric="nc", value=float(np.mean(ceiling))))
        subject_rows = [r for r in rows if r["roi"] == roi and r["stage"] == "test" and r["subject"] != "all"]
        for metric in ("r", "r_nc", "nc"):
            values = [r["value"] for r in subject_rows if r["metric"] == metric]
            rows.append(_row(**common, roi=roi, layer=committed, depth=depth[committed], stage="test",
                             metric=metric, value=float(np.mean(values)),
                             n_targets=int(sum(r["n_targets"] for r in subject_rows if r["metric"] == metric))))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Summary


def summarise(table: pd.DataFrame, truths: dict[str, dict | None]) -> dict:
    """Headline numbers: per model, benchmark and ROI the committed layer and mean test scores over subjects."""
    test = table[(table.stage == "test") & (table.subject.astype(str) == "all")]
    summary: dict[str, Any] = {}
    for model, by_model in test.groupby("model"):
        entry: dict[str, Any] = {"benchmarks": {}}
        for bench, by_bench in by_model.groupby("benchmark"):
            rois = {}
            for roi, by_roi in by_bench.groupby("roi"):
                values = dict(zip(by_roi.metric, by_roi.value))
                truth = truths.get(bench) or {}
                rois[str(roi)] = {"layer": str(by_roi.layer.iloc[0]), "r": values["r"], "r_nc": values["r_nc"],
                                  "nc": values["nc"], "true_layer": truth.get("true_layer", {}).get(str(roi))}
            entry["benchmarks"][bench] = {"rois": rois, "r_nc": float(np.mean([v["r_nc"] for v in rois.values()]))}
        entry["score"] = float(np.mean([b["r_nc"] for b in entry["benchmarks"].values()]))
        summary[str(model)] = entry
    return summary


def format_table(summary: dict) -> str:
    header = f"{'model':22s} {'benchmark':16s} {'roi':6s} {'layer':12s} {'true layer':12s} {'r':>7s} " \
             f"{'r_NC':>7s} {'NC %':>7s}"
    lines = [header, "-" * len(header)]
    for model, entry in summary.items():
        for bench, b in entry["benchmarks"].items():
            for roi, v in b["rois"].items():
                lines.append(f"{model:22s} {bench:16s} {roi:6s} {v['layer']:12s} {v['true_layer'] or '-':12s} "
                             f"{v['r']:7.3f} {v['r_nc']:7.3f} {v['nc']:7.1f}")
        lines.append(f"{model:22s} mean r_NC over benchmarks: {entry['score']:.3f}")
    return "\n".join(lines)


def run(config, workdir: pathlib.Path) -> dict:
    workdir = pathlib.Path(workdir)
    store = results.ResultStore(workdir)
    benchmarks = {}
    truths = {}
    for entry in config.benchmarks:
        dataset, truth = load_benchmark(entry, config, workdir)
        benchmarks[dataset.name] = dataset
        truths[dataset.name] = truth
    for label, model_config in config.models.items():
        spec, model = build_model(model_config)
        layers = list(model_config.get("layers") or spec.layers)
        for dataset in benchmarks.values():
            score_benchmark(label, spec, model, layers, dataset, config, workdir, store)
    table = store.table()
    summary = summarise(table, truths)
    results.write_json(workdir / "summary.json", summary)
    plot_paths = []
    for model in table.model.unique():
        path = workdir / f"layer_profile_{model}.png"
        plots.layer_profile(table[table.model == model], path)
        plot_paths.append(path)
    text = format_table(summary)
    results.write_text(workdir / "summary.txt", text + "\n")
    print(text)
    print(f"\nresults: {workdir / 'results.csv'}\nplots: " + ", ".join(str(p) for p in plot_paths))
    return summary
