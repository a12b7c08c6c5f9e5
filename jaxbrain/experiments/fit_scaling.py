"""Fits scaling laws of alignment against compute, pretraining samples and parameters, with bootstrap bands.

Reads a workdir's results.csv, averages test r_nc hierarchically (subjects -> ROI -> benchmark -> model), joins
the model inventory (parameters, forward FLOPs, pretraining samples D, compute C = D x FLOPs) and fits, per axis,
one law per benchmark and one for the benchmark average. Writes fits.csv (point estimates, losses of both forms,
95 % intervals), bands.csv (curve and band on a grid), points.csv, scaling_<axis>.png and summary.json.
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import pandas as pd

from jaxbrain import inventory as inventory_lib
from jaxbrain import plots, results, scaling

log = logging.getLogger(__name__)
AVERAGE = "average"


def scaling_points(table: pd.DataFrame, inventory: pd.DataFrame, *, stage: str = "test",
                   metric: str = "r_nc") -> pd.DataFrame:
    """Rows (model, group, score, params, flops, samples, compute): one per model and benchmark, plus the
    model-level mean over benchmarks as group "average"."""
    by_bench = scaling.aggregate_scores(table, "benchmark", stage=stage, metric=metric)
    by_bench = by_bench.rename(columns={"benchmark": "group"})
    by_model = scaling.aggregate_scores(table, "model", stage=stage, metric=metric).assign(group=AVERAGE)
    points = pd.concat([by_bench, by_model], ignore_index=True)
    return points.merge(inventory, on="model", how="left")


def fit_groups(points: pd.DataFrame, axis: str, *, min_models: int = 4, **fit_kwargs) -> dict:
    """group -> PowerLawFit for every group with at least `min_models` models with a positive value of `axis`."""
    fits = {}
    for group, rows in points.groupby("group", sort=False):
        rows = rows[np.isfinite(rows[axis].astype(float)) & (rows[axis].astype(float) > 0)]
        if len(rows) < min_models:
            log.info("scaling %s/%s: %d models with a value, fewer than %d; not fitted", axis, group, len(rows),
                     min_models)
            continue
        fits[group] = scaling.fit_axis(rows[axis].to_numpy(float), rows["score"].to_numpy(float), axis,
                                       **fit_kwargs)
    return fits


def bands_frame(fits: dict, points: pd.DataFrame, axis: str, n: int = 100) -> pd.DataFrame:
    frames = []
    for group, fit in fits.items():
        x = points.loc[points["group"] == group, axis].astype(float)
        grid = np.logspace(np.log10(x.min()), np.log10(x.max()), n)
        lo, hi = fit.band(grid)
        frames.append(pd.DataFrame(dict(axis=axis, group=group, x=grid, score=fit.score(grid), lo=lo, hi=hi)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["axis", "group", "x", "score", "lo", "hi"])


def fit_all(table: pd.DataFrame, inventory: pd.DataFrame, workdir: pathlib.Path, *, axes=("compute",),
            min_models: int = 4, **fit_kwargs) -> dict:
    """Fits every axis, writes fits.csv, bands.csv, points.csv and scaling_<axis>.png; returns a summary."""
    workdir = pathlib.Path(workdir)
    points = scaling_points(table, inventory)
    fit_rows, band_frames, plot_paths = [], [], {}
    for axis in axes:
        if axis not in scaling.AXES:
            raise ValueError(f"fit_scaling: unknown axis {axis!r}; known: {', '.join(scaling.AXES)}")
        fits = fit_groups(points, axis, min_models=min_models, **fit_kwargs)
        for group, fit in fits.items():
            fit_rows.append(dict(axis=axis, group=group, **fit.summary()))
        band_frames.append(bands_frame(fits, points, axis))
        usable = points[np.isfinite(points[axis].astype(float)) & (points[axis].astype(float) > 0)]
        if fits:
            shown = usable.assign(x=usable[axis].astype(float))[["x", "score", "group"]]
            plot_paths[axis] = str(plots.scaling_curves(shown, fits, workdir / f"scaling_{axis}.png",
                                                        xlabel=plots.AXIS_LABELS[axis], title=f"Scaling: {axis}"))
    fits_frame = pd.DataFrame(fit_rows)
    results.write_csv(workdir / "fits.csv", fits_frame)
    results.write_csv(workdir / "bands.csv", pd.concat(band_frames, ignore_index=True))
    results.write_csv(workdir / "points.csv", points)
    return dict(n_models=int(points["model"].nunique()), plots=plot_paths,
                fits={f"{r['axis']}/{r['group']}": {k: r[k] for k in ("form", "E", "A", "alpha", "lam", "loss")}
                      for r in fit_rows})


def _grid(config):
    grid = config.get("grid")
    return {k: tuple(float(v) for v in grid[k]) for k in grid} if grid else None


def run(config, workdir: pathlib.Path) -> dict:
    """Entry point of `python -m jaxbrain.launch --config configs/fit_scaling.py --workdir DIR`."""
    workdir = pathlib.Path(workdir)
    if not config.source:
        raise ValueError("fit_scaling: set config.source to a workdir that holds results.csv")
    table = results.read_table(config.source)
    models = sorted(table["model"].astype(str).unique())
    inventory = inventory_lib.inventory_for(models, config.inventory or None)
    results.write_csv(workdir / "inventory.csv", inventory)
    summary = fit_all(table, inventory, workdir, axes=tuple(config.axes), min_models=int(config.min_models),
                      n_bootstrap=int(config.n_bootstrap), seed=int(config.seed), delta=float(config.delta),
                      grid=_grid(config))
    results.write_json(workdir / "summary.json", summary)
    for name, fit in summary["fits"].items():
        print(f"{name}: {fit['form']} E={fit['E']:.4f} A={fit['A']:.4g} alpha={fit['alpha']:.4f} "
              f"loss={fit['loss']:.3g}")
    return summary
