"""Headline numbers of a scoring run from its results rows, and the table printed at the end of a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def summarise(table: pd.DataFrame, truths: Mapping[str, dict | None],
              roi_order: Mapping[str, Sequence[str]] | None = None, models: Sequence[str] | None = None) -> dict:
    """Per model, benchmark and ROI the committed layer and the cross-subject test scores.

    Models follow `models` (default: their order in the table), benchmarks the order of `truths`, ROIs each
    benchmark's declared order (`roi_order`). A benchmark without a test split reports its committed-layer
    cross-validation scores.
    """
    roi_order = roi_order or {}
    test = table[table.stage.isin(["test", "cv_committed"]) & (table.subject.astype(str) == "all")]
    summary: dict[str, Any] = {}
    for model in models or list(dict.fromkeys(test.model)):
        by_model = test[test.model == model]
        entry: dict[str, Any] = {"benchmarks": {}}
        for bench in [b for b in truths if b in set(by_model.benchmark)]:
            by_bench = by_model[by_model.benchmark == bench]
            order = list(roi_order.get(bench, sorted(by_bench.roi.astype(str).unique())))
            rois = {}
            for roi in [r for r in order if r in set(by_bench.roi.astype(str))]:
                by_roi = by_bench[by_bench.roi.astype(str) == roi]
                values = dict(zip(by_roi.metric, by_roi.value))
                truth = truths.get(bench) or {}
                rois[roi] = {"layer": str(by_roi.layer.iloc[0]), "r": values["r"], "r_nc": values["r_nc"],
                             "nc": values["nc"], "true_layer": truth.get("true_layer", {}).get(roi)}
            entry["benchmarks"][bench] = {"rois": rois, "r_nc": float(np.mean([v["r_nc"] for v in rois.values()]))}
        entry["score"] = float(np.mean([b["r_nc"] for b in entry["benchmarks"].values()]))
        summary[str(model)] = entry
    return summary


def format_table(summary: Mapping[str, dict], warnings: Sequence[str] = ()) -> str:
    """A fixed-width text table of `summarise` output; columns widen to fit long names."""
    records = [(model, bench, roi, v["layer"], v["true_layer"] or "-", f"{v['r']:.3f}", f"{v['r_nc']:.3f}",
                f"{v['nc']:.1f}")
               for model, entry in summary.items() for bench, b in entry["benchmarks"].items()
               for roi, v in b["rois"].items()]
    header = ("model", "benchmark", "roi", "layer", "true layer", "r", "r_NC", "NC %")
    minimum = (22, 16, 6, 12, 12, 7, 7, 7)
    widths = [max(m, len(h), *(len(r[i]) for r in records)) for i, (h, m) in enumerate(zip(header, minimum))]

    def line(cells):
        left = [f"{c:{w}s}" for c, w in zip(cells[:5], widths[:5])]
        right = [f"{c:>{w}s}" for c, w in zip(cells[5:], widths[5:])]
        return " ".join(left + right)

    lines = [line(header), "-" * len(line(header))]
    for model, entry in summary.items():
        lines += [line(r) for r in records if r[0] == model]
        lines.append(f"{model:{widths[0]}s} mean r_NC over benchmarks: {entry['score']:.3f}")
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)
