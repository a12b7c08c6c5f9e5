"""A Markdown report with figures from any workdir's results.csv: score tables, layer profiles, scaling fits.

Writes report.md, the tables it shows (CSV + Markdown), layer_profile_<model>.png and, when asked and the
models' inventory allows, scaling plots and fits; then summary.json.
"""

from __future__ import annotations

import pathlib
import re

import pandas as pd

from jaxbrain import plots, results, scaling



def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def _table_section(table: pd.DataFrame, workdir: pathlib.Path, metric: str) -> list[str]:
    md_path, csv_path = plots.readout_table(table, workdir / f"scores_{_slug(metric)}", metric=metric)
    return [f"### Test {metric}", "", "Cross-subject mean per benchmark and ROI; `mean` averages ROIs within "
            "each benchmark, then benchmarks. Best per column in bold.", "", md_path.read_text(),
            f"([CSV]({csv_path.name}))", ""]


def _scaling_section(config, table, workdir: pathlib.Path) -> tuple[list[str], dict]:
    from jaxbrain import inventory as inventory_lib

    models = sorted(table["model"].astype(str).unique())
    try:
        inventory = inventory_lib.inventory_for(models, config.get("inventory") or None)
    except KeyError as err:
        return ["## Scaling", "", f"Not fitted: {err}", ""], {}
    fits = scaling.fit_all(table, inventory, axes=tuple(config.axes), min_models=4,
                           n_bootstrap=int(config.n_bootstrap), seed=42)
    summary = dict(n_models=int(fits.points["model"].nunique()), plots=scaling.write_fits(fits, workdir),
                   fits=fits.summary())
    lines = ["## Scaling", ""]
    if not summary["fits"]:
        return lines + ["Too few models with inventory data to fit (at least 4 per group).", ""], summary
    lines += ["| axis/group | form | E | A | alpha | lambda | loss |", "|---|---|---|---|---|---|---|"]
    for name, fit in summary["fits"].items():
        lam = "" if fit["lam"] is None else f"{fit['lam']:.3f}"
        lines.append(f"| {name} | {fit['form']} | {fit['E']:.4f} | {fit['A']:.4g} | {fit['alpha']:.4f} | {lam} | "
                     f"{fit['loss']:.3g} |")
    lines.append("")
    for axis, path in summary["plots"].items():
        lines += [f"![scaling {axis}]({pathlib.Path(path).name})", ""]
    lines += ["Bands: 95 % percentile intervals over bootstrap resamples of the models (fits.csv, bands.csv).", ""]
    return lines, summary


def build_report(table: pd.DataFrame, workdir: pathlib.Path, *, source: str = "", config=None) -> dict:
    """Writes report.md and its figures/tables for the results rows in `table`; returns a summary dict."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if table.empty:
        raise ValueError(f"report: results table of {source or '<memory>'} has no rows")
    models = sorted(table["model"].astype(str).unique())
    benchmarks = sorted(table["benchmark"].astype(str).unique())
    lines = [f"# jaxbrain report{': ' + source if source else ''}", "",
             f"{len(table)} result rows; {len(models)} models ({', '.join(models)}); "
             f"{len(benchmarks)} benchmarks ({', '.join(benchmarks)}).", ""]
    summary: dict = dict(models=models, benchmarks=benchmarks, tables={}, plots=[])

    test_metrics = sorted(table.loc[table["stage"] == "test", "metric"].astype(str).unique(),
                          key=lambda m: (m != "r_nc", m))
    if test_metrics:
        lines += ["## Test scores", ""]
        for metric in test_metrics:
            lines += _table_section(table, workdir, metric)
            summary["tables"][metric] = f"scores_{_slug(metric)}.csv"

    cv = table[(table["stage"] == "cv") & (table["metric"] == "r_nc")]
    if not cv.empty:
        lines += ["## Layer profiles", "", "Cross-subject mean cv r_nc against normalised depth; the star marks the "
                  "committed layer (the layer scored on the test split).", ""]
        for model in sorted(cv["model"].astype(str).unique()):
            path = plots.layer_profile(table[table["model"].astype(str) == model],
                                       workdir / f"layer_profile_{_slug(model)}.png")
            summary["plots"].append(path.name)
            lines += [f"### {model}", "", f"![layer profile {model}]({path.name})", ""]

    if config is not None and config.get("scaling"):
        scaling_lines, scaling_summary = _scaling_section(config, table, workdir)
        lines += scaling_lines
        summary["scaling"] = scaling_summary
    results.write_text(workdir / "report.md", "\n".join(lines))
    summary["report"] = "report.md"
    return summary


def run(config, workdir: pathlib.Path) -> dict:
    """Entry point of `python -m jaxbrain.launch --config configs/report.py --config.source=DIR --workdir OUT`."""
    if not config.source:
        raise ValueError("report: set config.source to a workdir that holds results.csv")
    table = results.read_table(config.source)
    summary = build_report(table, workdir, source=str(config.source), config=config)
    results.write_json(pathlib.Path(workdir) / "summary.json", summary)
    print(f"report: {pathlib.Path(workdir) / 'report.md'}")
    return summary
