"""Figures and tables: scaling curves with bootstrap bands, layer profiles over depth, readout comparison tables,
training curves.

Matplotlib runs on the Agg backend (files only, no display). Every function writes its file(s) and returns
the path(s).
"""

from __future__ import annotations

import math
import pathlib
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from jaxbrain import results  # noqa: E402
from jaxbrain.features import store  # noqa: E402

AXIS_LABELS = {
    "compute": "Compute C = D x FLOPs",
    "samples": "Pretraining samples D",
    "params": "Parameters",
    "fitting_samples": "Fitting samples",
    "neural_fraction": "Neural data used for fine-tuning (%)",
}


def _colours(n: int):
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, path) -> pathlib.Path:
    path = pathlib.Path(path)
    store.atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def scaling_curves(points: pd.DataFrame, fits: Mapping[str, object], path, *, xlabel: str = "X",
                   title: str | None = None, level: float = 95.0) -> pathlib.Path:
    """Scaling curves in the style of Fig. 2: points, fitted curve and bootstrap band per group, log x.

    Args:
      points: columns x (raw resource), score, group (one colour per group, e.g. benchmark).
      fits: group -> scaling.PowerLawFit (groups without a fit are drawn as points only).
      path: PNG to write.
    """
    missing = {"x", "score", "group"} - set(points.columns)
    if missing:
        raise ValueError(f"scaling_curves: points lack columns {sorted(missing)}")
    if points.empty:
        raise ValueError("scaling_curves: no points to plot")
    if np.any(points["x"] <= 0):
        raise ValueError("scaling_curves: x must be > 0 on a log axis")
    groups = list(dict.fromkeys(list(points["group"]) + list(fits)))
    fig, ax = plt.subplots(figsize=(6.0, 4.2), constrained_layout=True)
    lo, hi = points["x"].min(), points["x"].max()
    grid = np.logspace(np.log10(lo) - 0.1, np.log10(hi) + 0.1, 200)
    for colour, group in zip(_colours(len(groups)), groups):
        sub = points[points["group"] == group]
        ax.scatter(sub["x"], sub["score"], color=colour, s=22, alpha=0.8, edgecolor="none")
        fit = fits.get(group)
        if fit is None:
            if len(sub):
                ax.plot([], [], color=colour, label=str(group))
            continue
        label = f"{group} (alpha={fit.alpha:.2f})"
        ax.plot(grid, fit.score(grid), color=colour, lw=2, label=label)
        if len(fit.bootstrap):
            band_lo, band_hi = fit.band(grid, level)
            ax.fill_between(grid, band_lo, band_hi, color=colour, alpha=0.2, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Alignment score (normalised r)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which="both", lw=0.5)
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def _test_intervals(table: pd.DataFrame, metric: str) -> dict:
    """(model, benchmark, roi) -> (cross-subject test value, ci_low, ci_high) where results carry intervals."""
    if "ci_low" not in table:
        return {}
    rows = table[(table["stage"] == "test") & (table["metric"] == metric) & (table["subject"].astype(str) == "all")]
    return {(r.model, r.benchmark, r.roi): (r.value, r.ci_low, r.ci_high) for r in rows.itertuples()}


def layer_profile(table: pd.DataFrame, path, *, metric: str = "r_nc") -> pathlib.Path:
    """Cross-subject mean cv score against normalised layer depth, one panel per (benchmark, roi).

    `table` holds results.csv rows; stage "cv" rows give the profile (one line per model) and the layer of
    the stage "test" rows, the committed layer, is marked with a star; the square beside it is the test score
    with its 95 % bootstrap interval.
    """
    needed = {"model", "benchmark", "subject", "roi", "layer", "depth", "stage", "metric", "value"}
    missing = needed - set(table.columns)
    if missing:
        raise ValueError(f"layer_profile: results table lacks columns {sorted(missing)}")
    cv = table[(table["stage"] == "cv") & (table["metric"] == metric)]
    if cv.empty:
        raise ValueError(f"layer_profile: no rows with stage 'cv' and metric {metric!r}")
    keys = ["model", "benchmark", "roi", "layer", "depth"]
    prof = results.cross_subject_mean(cv, keys)
    committed = (table[table["stage"] == "test"].groupby(["model", "benchmark", "roi"])["layer"]
                 .agg(lambda s: s.astype(str).iloc[0]))
    test_ci = _test_intervals(table, metric)
    panels = list(prof.groupby(["benchmark", "roi"], sort=True).groups)
    models = sorted(prof["model"].unique())
    colours = dict(zip(models, _colours(len(models))))
    ncols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False,
                             constrained_layout=True)
    for ax, (bench, roi) in zip(axes.flat, panels):
        sub = prof[(prof["benchmark"] == bench) & (prof["roi"] == roi)]
        for model, rows in sub.groupby("model"):
            rows = rows.sort_values("depth")
            ax.plot(rows["depth"], rows["value"], "-o", ms=3, color=colours[model], label=model)
            layer = committed.get((model, bench, roi))
            mark = rows[rows["layer"].astype(str) == layer] if layer is not None else rows.iloc[:0]
            if len(mark):
                ax.plot(mark["depth"], mark["value"], "*", ms=14, color=colours[model], markeredgecolor="k")
                interval = test_ci.get((model, bench, roi))
                if interval is not None and np.all(np.isfinite(interval[1:])):
                    depth = float(mark["depth"].iloc[0])
                    ax.errorbar([depth], [interval[0]], yerr=[[interval[0] - interval[1]], [interval[2] - interval[0]]],
                                fmt="s", ms=4, color=colours[model], capsize=3, alpha=0.8)
        ax.set_title(f"{bench} / {roi}", fontsize=9)
        ax.set_xlabel("normalised depth")
        ax.set_ylabel(f"cv {metric}")
        ax.set_xlim(-0.05, 1.05)
        ax.grid(alpha=0.3, lw=0.5)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, frameon=False)
    fig.suptitle("Layer profiles (star: committed layer)", fontsize=10)
    return _save(fig, path)


def layer_roi_heatmap(table: pd.DataFrame, path, *, metric: str = "r_nc") -> pathlib.Path:
    """Appendix D layout: cross-subject mean cv score of every candidate layer (rows, by depth) and ROI (columns),
    one panel per (model, benchmark); the committed layer of each ROI is outlined."""
    cv = table[(table["stage"] == "cv") & (table["metric"] == metric)]
    if cv.empty:
        raise ValueError(f"layer_roi_heatmap: no rows with stage 'cv' and metric {metric!r}")
    prof = results.cross_subject_mean(cv, ["model", "benchmark", "roi", "layer", "depth"])
    committed = (table[table["stage"] == "test"].groupby(["model", "benchmark", "roi"])["layer"]
                 .agg(lambda s: s.astype(str).iloc[0]))
    panels = list(prof.groupby(["model", "benchmark"], sort=False).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 + 0.5 * prof["roi"].nunique(), 3.5), squeeze=False,
                             constrained_layout=True)
    for ax, (model, bench) in zip(axes.flat, panels):
        sub = prof[(prof["model"] == model) & (prof["benchmark"] == bench)]
        grid = sub.pivot_table(index=["depth", "layer"], columns="roi", values="value", sort=True)
        image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis", origin="lower")
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=90, fontsize=7)
        ax.set_yticks(range(grid.shape[0]), [layer for _, layer in grid.index], fontsize=6)
        layers = [layer for _, layer in grid.index]
        for j, roi in enumerate(grid.columns):
            chosen = committed.get((model, bench, roi))
            if chosen in layers:
                ax.add_patch(plt.Rectangle((j - 0.5, layers.index(chosen) - 0.5), 1, 1, fill=False, lw=1.5,
                                           edgecolor="w"))
        ax.set_title(f"{model} / {bench}", fontsize=8)
        fig.colorbar(image, ax=ax, shrink=0.8, label=f"cv {metric}")
    return _save(fig, path)


def time_courses(curves: pd.DataFrame, path, *, title: str = "") -> pathlib.Path:
    """r(t) per ROI (rows of `maps.time_courses`): thin lines per subject, a thick line for their mean."""
    rois = list(dict.fromkeys(curves["roi"]))
    fig, axes = plt.subplots(1, len(rois), figsize=(3.2 * len(rois), 2.8), squeeze=False, sharey=True,
                             constrained_layout=True)
    for ax, roi in zip(axes.flat, rois):
        for subject, rows in curves[curves["roi"] == roi].groupby("subject"):
            mean = subject == "all"
            ax.plot(rows["time"], rows["r"], lw=2.0 if mean else 0.7, alpha=1.0 if mean else 0.5,
                    color="k" if mean else None, label="mean" if mean else None)
        ax.axhline(0, lw=0.5, color="grey")
        ax.set_title(roi, fontsize=9)
        ax.set_xlabel("time")
    axes.flat[0].set_ylabel("test r")
    axes.flat[0].legend(fontsize=7, frameon=False)
    fig.suptitle(f"r(t){': ' + title if title else ''}", fontsize=10)
    return _save(fig, path)


def readout_table(table: pd.DataFrame, path_stem, *, rows: str = "model", stage: str = "test",
                  metric: str = "r_nc") -> tuple[pathlib.Path, pathlib.Path]:
    """Table 2-style comparison: one row per `rows` value (readouts or models), one column per
    benchmark/ROI with the cross-subject mean score, and the mean over benchmarks (hierarchical: ROI ->
    benchmark). Writes `<path_stem>.md` (best per column in bold) and `<path_stem>.csv`; returns both paths.
    """
    sel = table[(table["stage"] == stage) & (table["metric"] == metric)]
    if sel.empty:
        raise ValueError(f"readout_table: no rows with stage {stage!r} and metric {metric!r}")
    if rows not in sel.columns:
        raise ValueError(f"readout_table: no column {rows!r} in the results table")
    per_roi = results.cross_subject_mean(sel, [rows, "benchmark", "roi"])
    wide = per_roi.pivot_table(index=rows, columns=["benchmark", "roi"], values="value")
    wide.columns = [f"{b} {r}" for b, r in wide.columns]
    per_bench = per_roi.groupby([rows, "benchmark"])["value"].mean().groupby(rows).mean()
    wide["mean"] = per_bench
    wide = wide.sort_values("mean", ascending=False)
    stem = pathlib.Path(path_stem)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    results.write_csv(csv_path, wide.reset_index())
    results.write_text(md_path, markdown_table(wide.reset_index(), bold_max=list(wide.columns)))
    return md_path, csv_path


def markdown_table(frame: pd.DataFrame, bold_max: list[str] | None = None, digits: int = 3) -> str:
    """A GitHub Markdown table of `frame`; in each column of `bold_max` the largest value is bold when it is the
    only one that shows as that value at the printed precision (a tie is left plain)."""
    def text(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    cells = {c: [text(v) for v in frame[c]] for c in frame.columns}
    for c in bold_max or []:
        if c not in frame or not frame[c].notna().any():
            continue
        best = text(frame[c].max())
        if cells[c].count(best) == 1:
            cells[c] = [f"**{t}**" if t == best else t for t in cells[c]]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cells[c][i] for c in frame.columns) + " |" for i in range(len(frame))]
    return "\n".join(lines) + "\n"


def training_curves(frame: pd.DataFrame, path, *, x: str = "step", skip: tuple[str, ...] = ("epoch",)) -> pathlib.Path:
    """One panel per metric column of ``frame`` against ``x`` (log y where every value is positive)."""
    columns = [c for c in frame.columns if c != x and c not in skip and frame[c].notna().any()]
    n_cols = min(3, max(1, len(columns)))
    n_rows = max(1, math.ceil(len(columns) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.0 * n_rows), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        values = frame[column].astype(float)
        ax.plot(frame[x], values, lw=1.2, marker="o" if len(frame) < 30 else None, ms=3)
        if (values.dropna() > 0).all() and values.max() / max(values.min(), 1e-30) > 50:
            ax.set_yscale("log")
        ax.set_title(column, fontsize=9)
        ax.set_xlabel(x, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(columns):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save(fig, path)


def pareto(frame: pd.DataFrame, path, *, score: str = "r_nc", size: str = "parameters",
           label: str = "model") -> pathlib.Path:
    """Score against parameters (log x) per readout, the Pareto front (no other point is smaller and better)
    joined by a line."""
    missing = {score, size, label} - set(frame.columns)
    if missing:
        raise ValueError(f"pareto: frame lacks columns {sorted(missing)}")
    if frame.empty or (frame[size] <= 0).any():
        raise ValueError("pareto: need at least one point, every size > 0")
    fig, ax = plt.subplots(figsize=(5.5, 4.0), constrained_layout=True)
    for colour, row in zip(_colours(len(frame)), frame.itertuples()):
        ax.scatter(getattr(row, size), getattr(row, score), color=colour, s=40, label=str(getattr(row, label)))
    ordered = frame.sort_values([size, score], ascending=[True, False])
    front = ordered[ordered[score] >= ordered[score].cummax()]
    ax.plot(front[size], front[score], color="0.4", lw=1, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("Parameters per system (geometric mean)")
    ax.set_ylabel("Alignment score (normalised r)")
    ax.grid(alpha=0.3, which="both", lw=0.5)
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)
