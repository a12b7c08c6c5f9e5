"""The six readouts of Table S4 on a layer's tokens, per (benchmark, ROI), seed and mapping-data fraction.

Shared by the ``probe`` and ``mapping_scaling`` experiments (docs/method.md, Attention probes and readouts):

- ``LINEAR-SS``: the score pipeline's ridge (alpha by exact LOO, intercept, no projection) on the flattened
  tokens, one per subject;
- ``LOWRANK-SS``, ``MLP-SS``, ``ATTENTION-SS``: a trained readout per subject;
- ``MLP-MS``, ``ATTENTION-MS``: one trained readout for all subjects (shared trunk, per-subject heads).

Tokens come from a registered model's layer (``features.extract(keep="tokens")``: ViT tokens with the class
token, conv maps as H x W tokens, vectors as one token) or ship with the planted token benchmark. A fraction
F < 1 keeps the first round(F n_train) rows of ``default_rng(seed).permutation(n_train)`` of every subject's train
split (at least ``min_pairs``); the test split is never touched. Each (family, benchmark, ROI, seed, fraction) is
one results unit keyed by its settings; a trained system checkpoints after every epoch and resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil

import numpy as np
import pandas as pd
from scipy import stats

from jaxbrain import catalog, features, identity, pipeline, plots, probes, results
from jaxbrain.data import planted_tokens
from jaxbrain.models import loading
from jaxbrain.train import probing

log = logging.getLogger(__name__)
_FORMAT = 1
FAMILIES = {"LINEAR-SS": (None, False), "LOWRANK-SS": ("lowrank", False), "MLP-SS": ("mlp", False),
            "MLP-MS": ("mlp", True), "ATTENTION-SS": ("attention", False), "ATTENTION-MS": ("attention", True)}
PLANTED = "planted_tokens"


@dataclasses.dataclass
class TokenBenchmark:
    """A benchmark laid out for scoring with each ROI's tokens (rows in ``problem.order``)."""

    name: str
    digest: str
    problem: pipeline.ScoringProblem
    tokens: dict[str, np.ndarray]  # roi -> (n_stimuli, T, C)
    layers: dict[str, str]         # roi -> layer


def _roi_layers(config, rois) -> dict[str, str]:
    given = dict(item.split("=", 1) for item in config.layers if "=" in item)
    default = next((item for item in config.layers if "=" not in item), "")
    missing = [roi for roi in rois if roi not in given and not default]
    if missing:
        raise ValueError(f"config.layers gives no layer for ROIs {missing} (use layers=LAYER or ROI=LAYER+...)")
    return {roi: given.get(roi, default) for roi in rois}


def _model_tokens(config, benchmark, order, layers, workdir) -> dict[str, np.ndarray]:
    spec, model = loading.identify(config.model.label, config.model, identity.DigestCache(
        workdir / ".cache" / "digests.json"))
    module = loading.build(spec, model)
    names = sorted(set(layers.values()))
    out_dir = workdir / "features" / identity.fingerprint({"model": model, "benchmark": benchmark.digest})
    values = features.extract(module, spec, benchmark.stimuli, order, names, keep="tokens",
                              batch_size=config.batch_size, out_dir=out_dir, progress=config.progress)
    return {roi: values[layer] for roi, layer in layers.items()}


def load_benchmarks(config, workdir: pathlib.Path) -> list[TokenBenchmark]:
    """Every entry of ``config.benchmarks`` with its tokens (planted: shipped; otherwise from ``config.model``)."""
    scoring_config = pipeline.ScoringConfig(min_ceiling=float(config.min_ceiling), similarity=False)
    out = []
    for entry in config.benchmarks:
        if entry == PLANTED:
            dataset, tokens = planted_tokens.load(planted_tokens.TokenPlant(**config.planted_tokens.to_dict()),
                                                  workdir / "data")
            problem = pipeline.scoring_problem(dataset, scoring_config)
            position = {i: n for n, i in enumerate(planted_tokens.stimulus_ids(len(tokens)))}
            rows = np.array([position[i] for i in problem.order])
            out.append(TokenBenchmark(dataset.name, dataset.digest, problem,
                                      {roi: tokens[rows] for roi in dataset.rois}, {r: "tokens" for r in dataset.rois}))
            continue
        benchmark = next(iter(catalog.load([entry], config.planted.to_dict(), workdir / "data").values()))
        problem = pipeline.scoring_problem(benchmark.dataset, scoring_config)
        layers = _roi_layers(config, problem.rois)
        tokens = _model_tokens(config, benchmark, problem.order, layers, workdir)
        out.append(TokenBenchmark(benchmark.name, benchmark.digest, problem, tokens, layers))
    return out


def subsample(n_train: int, fraction: float, seed: int, min_pairs: int = 10) -> np.ndarray | None:
    """Train rows kept at ``fraction`` (sorted), None for the whole split."""
    if not 0 < fraction <= 1:
        raise ValueError(f"mapping fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return None
    n = min(n_train, max(min_pairs, int(round(fraction * n_train))))
    return np.sort(np.random.default_rng(seed).permutation(n_train)[:n])


def _subjects(bench: TokenBenchmark, roi: str, fraction: float, seed: int, min_pairs: int):
    out = {}
    for subject in bench.problem.subjects:
        positions, n_train = bench.problem.blocks[subject]
        y_train, y_test, ceiling = bench.problem.targets[(subject, roi)]
        keep = subsample(n_train, fraction, seed, min_pairs)
        out[subject] = probing.subject_data(positions, n_train, y_train, y_test, ceiling, keep)
    return out


def _ridge_rows(bench, roi, subjects, scoring_config) -> list[dict]:
    flat = bench.tokens[roi].reshape(len(bench.tokens[roi]), -1)
    rows = []
    for subject, data in subjects.items():
        positions = np.concatenate([data.train_rows, data.test_rows])
        problem = dataclasses.replace(bench.problem, subjects=[subject], rois=[roi],
                                      blocks={subject: (positions, len(data.train_rows))},
                                      targets={(subject, roi): (data.y_train, data.y_test, data.ceiling)})
        score = pipeline.score_layer(problem, flat, scoring_config, gram=False)[(subject, roi)]
        rows.append(dict(subject=subject, r=float(np.nanmean(score.test_r)),
                         r_nc=float(np.nanmean(score.test_r_nc)), n_targets=data.n_targets,
                         parameters=(flat.shape[1] + 1) * data.n_targets, system=subject,
                         n_pairs=len(data.train_rows)))
    return rows


def _probe_rows(family, bench, roi, subjects, config, seed, checkpoints: pathlib.Path, settings) -> list[dict]:
    readout, multi = FAMILIES[family]
    cfg = probes.ProbeConfig(readout=readout, **config.probe.to_dict())
    train = probing.TrainConfig(**config.train.to_dict())
    groups = [list(subjects)] if multi else [[s] for s in subjects]
    rows = []
    for group in groups:
        system = probing.SystemTrainer(cfg, train, bench.tokens[roi], [subjects[s] for s in group], seed)
        name = "all" if multi else group[0]
        state, loss = system.fit(checkpoints / name, dict(settings, system=name))
        for subject, score in zip(group, probing.test_scores(system, state)):
            rows.append(dict(subject=subject, **score, parameters=system.parameters, system=name,
                             n_pairs=len(subjects[subject].train_rows), final_loss=loss))
    return rows


def run_unit(store: results.ResultStore, family: str, bench: TokenBenchmark, roi: str, seed: int, fraction: float,
             config, workdir: pathlib.Path) -> list[dict]:
    """The rows of one (family, benchmark, ROI, seed, fraction), computed or read back."""
    settings = {"family": family, "benchmark": {"name": bench.name, "digest": bench.digest}, "roi": roi,
                "layer": bench.layers[roi], "model": config.model.to_dict(), "seed": int(seed),
                "fraction": float(fraction), "min_pairs": int(config.min_pairs), "min_ceiling": config.min_ceiling,
                "probe": config.probe.to_dict(), "train": config.train.to_dict(), "format": _FORMAT}
    unit = store.unit(identity.fingerprint(settings))
    if unit.has_rows("test"):
        return json.loads((unit.path / "systems.json").read_text())
    unit.describe({"settings": settings})
    subjects = _subjects(bench, roi, fraction, seed, int(config.min_pairs))
    checkpoints = workdir / "checkpoints" / unit.fingerprint
    if FAMILIES[family][0] is None:
        rows = _ridge_rows(bench, roi, subjects, pipeline.ScoringConfig(min_ceiling=float(config.min_ceiling),
                                                                        similarity=False, n_bootstrap=0))
    else:
        rows = _probe_rows(family, bench, roi, subjects, config, seed, checkpoints, settings)
    rows = [dict(row, model=family, benchmark=bench.name, roi=roi, layer=bench.layers[roi], seed=int(seed),
                 fraction=float(fraction)) for row in rows]
    unit.write_json("systems", rows)
    unit.put_rows("test", _result_rows(rows))
    shutil.rmtree(checkpoints, ignore_errors=True)
    return rows


def _result_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        base = {k: row[k] for k in ("model", "benchmark", "subject", "roi", "layer", "seed")}
        for metric in ("r", "r_nc", "parameters", "n_pairs"):
            out.append(dict(base, stage="test", metric=metric, value=float(row[metric]), n_targets=row["n_targets"]))
    return out


def run_all(config, workdir: pathlib.Path, fractions) -> pd.DataFrame:
    """Every family x benchmark x ROI x seed x fraction; one row per (system, subject) with scores and sizes."""
    workdir = pathlib.Path(workdir)
    store = results.ResultStore(workdir)
    unknown = [f for f in config.readouts if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown readouts {unknown}; choose from {list(FAMILIES)}")
    rows = []
    for bench in load_benchmarks(config, workdir):
        for roi in bench.problem.rois:
            for family in config.readouts:
                for fraction in fractions:
                    for seed in config.seeds:
                        log.info("%s on %s %s, fraction %g, seed %d", family, bench.name, roi, fraction, seed)
                        rows += run_unit(store, family, bench, roi, int(seed), float(fraction), config, workdir)
    return pd.DataFrame(rows)


def seed_means(table: pd.DataFrame) -> pd.DataFrame:
    """Per (family, benchmark, ROI, subject, fraction): scores averaged over seeds (the paper reports 3 seeds)."""
    keys = ["model", "benchmark", "roi", "subject", "fraction"]
    return table.groupby(keys, as_index=False).agg(r=("r", "mean"), r_nc=("r_nc", "mean"),
                                                   n_pairs=("n_pairs", "mean"), parameters=("parameters", "first"),
                                                   system=("system", "first"), n_seeds=("seed", "nunique"))


def table_s4(table: pd.DataFrame) -> pd.DataFrame:
    """Per family at full data: mean r_NC (ROI -> benchmark) and the geometric mean of parameters per system."""
    full = seed_means(table[table.fraction == table.fraction.max()])
    per_roi = full.groupby(["model", "benchmark", "roi"])["r_nc"].mean()
    score = per_roi.groupby(["model", "benchmark"]).mean().groupby("model").mean()
    systems = full.drop_duplicates(["model", "benchmark", "roi", "system"])
    params = systems.groupby("model")["parameters"].agg(lambda v: float(stats.gmean(np.asarray(v, float))))
    out = pd.DataFrame({"r_nc": score, "parameters_gmean": params}).reset_index()
    order = [f for f in FAMILIES if f in set(out.model)]
    return out.set_index("model").loc[order].reset_index()


def write_tables(table: pd.DataFrame, workdir: pathlib.Path) -> dict:
    """readouts.csv (every system), Table 2 layout (readouts x benchmark/ROI), Table S4 and the Pareto plot."""
    workdir = pathlib.Path(workdir)
    results.write_csv(workdir / "readouts.csv", table)
    full = seed_means(table[table.fraction == table.fraction.max()])
    tidy = full.assign(stage="test", metric="r_nc", value=full.r_nc)
    plots.readout_table(tidy, workdir / "table2")
    s4 = table_s4(table)
    results.write_csv(workdir / "table_s4.csv", s4)
    results.write_text(workdir / "table_s4.md", plots.markdown_table(s4, bold_max=["r_nc"]))
    plots.pareto(s4.rename(columns={"parameters_gmean": "parameters"}), workdir / "pareto.png")
    return {row.model: {"r_nc": float(row.r_nc), "parameters_gmean": float(row.parameters_gmean)}
            for row in s4.itertuples()}
