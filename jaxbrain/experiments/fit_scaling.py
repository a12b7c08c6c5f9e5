"""Fits scaling laws of alignment against compute, pretraining samples and parameters, with bootstrap bands.

Reads a workdir's results.csv, averages test r_nc hierarchically (subjects -> ROI -> benchmark -> model), joins
the model inventory (parameters, forward FLOPs, pretraining samples D, compute C = D x FLOPs) and fits, per axis,
one law per benchmark and one for the benchmark average. Writes fits.csv (point estimates, losses of both forms,
95 % intervals), bands.csv (curve and band on a grid), points.csv, scaling_<axis>.png and summary.json.
"""

from __future__ import annotations

import logging
import pathlib

from jaxbrain import inventory as inventory_lib
from jaxbrain import results, scaling

log = logging.getLogger(__name__)


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
    inventory = inventory_lib.inventory_for(models, config.inventory or None, table=table)
    lacking = inventory_lib.missing(inventory, tuple(config.axes))
    if lacking:
        raise ValueError(f"fit_scaling on {config.source}: {lacking}")
    results.write_csv(workdir / "inventory.csv", inventory)
    fits = scaling.fit_all(table, inventory, axes=tuple(config.axes), min_models=int(config.min_models),
                           exclude_objectives=tuple(config.get("exclude_objectives", scaling.EXCLUDED_OBJECTIVES)),
                           holdout_sources=tuple(config.get("holdout_sources", scaling.HELD_OUT_SOURCES)),
                           stage=config.get("stage", "test"), metric=config.get("metric", "r_nc"),
                           form=config.get("form", "auto"), n_bootstrap=int(config.n_bootstrap),
                           seed=int(config.seed), delta=float(config.delta), grid=_grid(config))
    holdout = fits.holdout_residuals()
    summary = dict(n_models=int(fits.points["model"].nunique()), plots=scaling.write_fits(fits, workdir),
                   fits=fits.summary(), held_out=holdout.to_dict("records"))
    results.write_json(workdir / "summary.json", summary)
    for name, fit in summary["fits"].items():
        print(f"{name}: {fit['form']} E={fit['E']:.4f} A={fit['A']:.4g} alpha={fit['alpha']:.4f} "
              f"loss={fit['loss']:.3g}")
    return summary
