"""Paired differences of test scores between two models, or two layers of one model, with 95 % intervals.

Reads a scoring workdir: the bootstrap replicates kept for every layer of every unit share their resamples of the
test stimuli (and subjects), so the replicates of a - b give a paired interval (jaxbrain.uncertainty). Models
are compared at their committed layers unless `layer_a` / `layer_b` name layers. Writes compare.csv.
"""

from __future__ import annotations

import pathlib

import pandas as pd

from jaxbrain import pipeline, results, uncertainty


def layer_scores(store: results.ResultStore, table: pd.DataFrame, model: str, benchmark: str, layer: str = ""):
    """(subject, roi) -> LayerScore of `model` on `benchmark` at `layer` (default: each ROI's committed layer)."""
    test = table[(table.model == model) & (table.benchmark == benchmark) & (table.stage == "test")
                 & (table.metric == "r_nc") & (table.subject != "all")]
    if test.empty:
        raise ValueError(f"compare: no test scores of model {model!r} on {benchmark!r} in {store.workdir}")
    unit = store.unit(str(test.fingerprint.iloc[0]))
    out = {}
    for roi, rows in test.groupby("roi", sort=False):
        name = f"layer-{layer or rows.layer.iloc[0]}"
        if not unit.has_arrays(name):
            raise ValueError(f"compare: {model!r} on {benchmark!r} has no scores of layer "
                             f"{layer or rows.layer.iloc[0]!r}")
        scores = pipeline.layer_scores_from_arrays(unit.arrays(name))
        out.update({key: score for key, score in scores.items() if key[1] == roi})
    return out, int(test.seed.iloc[0])


def run(config, workdir: pathlib.Path) -> dict:
    workdir = pathlib.Path(workdir)
    if not config.source or not config.a:
        raise ValueError("compare: set config.source (a scoring workdir) and config.a (and config.b or layers)")
    store, table = results.ResultStore(config.source), results.read_table(config.source)
    b = config.b or config.a
    if b == config.a and config.layer_a == config.layer_b:
        raise ValueError("compare: a and b are the same model at the same layer; name another model or layers")
    benchmarks = [name for name in dict.fromkeys(table.benchmark) if name in set(table[table.model == b].benchmark)
                  and name in set(table[table.model == config.a].benchmark)]
    rows = []
    for benchmark in benchmarks:
        scores_a, seed = layer_scores(store, table, config.a, benchmark, config.layer_a)
        scores_b, _ = layer_scores(store, table, b, benchmark, config.layer_b)
        rows += uncertainty.compare(scores_a, scores_b, seed, benchmark)
    frame = pd.DataFrame(rows)
    results.write_csv(workdir / "compare.csv", frame)
    shown = frame[frame.subject == "all"]
    label_a = f"{config.a}{'@' + config.layer_a if config.layer_a else ''}"
    label_b = f"{b}{'@' + config.layer_b if config.layer_b else ''}"
    print(f"{label_a} - {label_b} (test r_NC, 95 % paired bootstrap interval):")
    for _, row in shown.iterrows():
        print(f"  {row.benchmark:16s} {row.roi:8s} {row.difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]")
    return {"a": label_a, "b": label_b, "rows": shown.to_dict("records")}
