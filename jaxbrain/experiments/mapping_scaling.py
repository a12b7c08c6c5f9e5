"""Mapping-data scaling: every readout on fractions of the train split, S(F) = E - A F^-alpha per readout (Fig. 6).

For each fraction x seed x readout (``jaxbrain.probe_runs``: subsampled train split, unchanged test split, no
projection) the test r_NC is averaged over subjects, ROIs and benchmarks (hierarchically); the reduced mapping law
is fitted on those points against F (train pairs per subject, scaled by 1/10) with bootstrap bands
(``jaxbrain.scaling.fit_mapping_law``). Writes ``mapping_points.csv``, ``mapping_fits.csv`` (E_S = 1 - E, A,
alpha and their 95 % intervals per readout), ``mapping_scaling.png``, and the Table 2 / Table S4 layouts at full
data as the probe experiment does.
"""

from __future__ import annotations

import pathlib

import pandas as pd

from jaxbrain import plots, probe_runs, results, scaling


def mapping_points(table: pd.DataFrame) -> pd.DataFrame:
    """One point per (readout, fraction, seed): mean r_NC (subjects -> ROI -> benchmark) and mean pairs F."""
    per_roi = table.groupby(["model", "fraction", "seed", "benchmark", "roi"], as_index=False).agg(
        r_nc=("r_nc", "mean"), n_pairs=("n_pairs", "mean"))
    per_bench = per_roi.groupby(["model", "fraction", "seed", "benchmark"], as_index=False).mean(numeric_only=True)
    return per_bench.groupby(["model", "fraction", "seed"], as_index=False).mean(numeric_only=True)


def run(config, workdir) -> dict:
    workdir = pathlib.Path(workdir)
    table = probe_runs.run_all(config, workdir, fractions=tuple(config.fractions))
    points = mapping_points(table)
    fits, rows = {}, []
    for family, group in points.groupby("model", sort=False):
        if group.fraction.nunique() < 2:
            continue
        fit = scaling.fit_mapping_law(group.n_pairs.to_numpy(), group.r_nc.to_numpy(),
                                      n_bootstrap=int(config.n_bootstrap))
        fits[family] = fit
        rows.append(dict(model=family, E_S=1.0 - fit.E, **fit.summary()))
    results.write_csv(workdir / "mapping_points.csv", points)
    fit_table = pd.DataFrame(rows)
    results.write_csv(workdir / "mapping_fits.csv", fit_table)
    if len(points):
        plots.scaling_curves(points.rename(columns={"n_pairs": "x", "r_nc": "score", "model": "group"}), fits,
                             workdir / "mapping_scaling.png", xlabel=plots.AXIS_LABELS["fitting_samples"],
                             title="Mapping-data scaling")
    summary = {"readouts": probe_runs.write_tables(table, workdir),
               "fits": {family: {"alpha": fit.alpha, "E_S": 1.0 - fit.E, "A": fit.A} for family, fit in fits.items()}}
    results.write_json(workdir / "summary.json", summary)
    print(fit_table[["model", "E_S", "A", "alpha"]].to_string(index=False) if len(fit_table) else "no fits")
    return summary
