"""Converts a public dataset release into a validated NeuralDataset file (workdir/<dataset>.h5).

The reader is chosen by `config.dataset` from `jaxbrain.data.sources.READERS` and called as
`reader(config.source_dir, **config.options)`. The output is written atomically and validated; a rerun skips a
dataset whose output exists and validates, so an interrupted run never leaves a half-written file behind.
Several datasets may share one workdir; `summary.json` holds one entry per prepared file.
"""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np

from jaxbrain import results
from jaxbrain.data import neural, sources

log = logging.getLogger(__name__)


def output_path(config, workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / f"{config.dataset}.h5"


def _remove_stale_temporaries(path: pathlib.Path) -> None:
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        log.info("removing unfinished temporary file %s", tmp)
        tmp.unlink(missing_ok=True)


def describe(ds: neural.NeuralDataset) -> list[dict]:
    """One row per (subject, ROI): stimuli per split, targets, median noise ceiling."""
    rows = []
    for subject in ds.subjects:
        for roi in ds.rois:
            nc = ds.ceiling(subject, roi)
            row = {"subject": subject, "roi": roi, "n_targets": int(nc.size),
                   "median_nc": float(np.median(nc)) if nc.size else float("nan")}
            for split in ds.splits:
                row[f"n_{split}"] = int(len(ds.ids(split, subject)))
            rows.append(row)
    return rows


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    cells = [[f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
    return "\n".join(lines)


def run(config, workdir) -> dict:
    """Prepares `config.dataset` from `config.source_dir` into `workdir/<dataset>.h5`; returns the summary."""
    workdir = pathlib.Path(workdir)
    reader = sources.get_reader(config.dataset)
    path = output_path(config, workdir)
    _remove_stale_temporaries(path)
    if path.is_file() and not config.get("overwrite", False):
        try:
            ds = neural.load(path, lazy=True)
        except (neural.NeuralDataError, OSError, ValueError, KeyError) as err:
            log.warning("existing %s does not validate (%s); preparing it again", path, err)
        else:
            log.info("%s exists and validates; skipping (set overwrite=True to redo)", path)
            return _finish(ds, path, workdir, skipped=True)
    if not config.source_dir:
        raise ValueError(f"dataset {config.dataset!r}: config.source_dir is empty; pass "
                         "--config.source_dir=<folder of the release>")
    source = pathlib.Path(config.source_dir).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"source of dataset {config.dataset!r} not found: {source}")
    options = dict(config.get("options", {}) or {})
    log.info("reading %s from %s with %s", config.dataset, source, options)
    ds = reader(source, **options)
    neural.save(ds, path, embed_stimuli=bool(config.get("embed_stimuli", False)))
    ds = neural.load(path, lazy=True)  # check what is on disk, not what was in memory
    return _finish(ds, path, workdir, skipped=False)


def _finish(ds: neural.NeuralDataset, path: pathlib.Path, workdir: pathlib.Path, skipped: bool) -> dict:
    rows = describe(ds)
    summary = {"dataset": ds.name, "file": str(path), "modality": ds.modality, "splits": ds.splits,
               "subjects": ds.subjects, "rois": ds.rois, "skipped": skipped, "per_subject_roi": rows}
    summary_path = workdir / "summary.json"
    merged = {}
    if summary_path.is_file():
        try:
            merged = json.loads(summary_path.read_text())
        except json.JSONDecodeError:
            merged = {}
    merged[path.stem] = summary
    results.write_json(summary_path, merged)
    status = "already prepared" if skipped else "written"
    log.info("%s (%s, validated): %d subjects x %d ROIs", path, status, len(ds.subjects), len(ds.rois))
    print(f"{path} ({status}, validated)\n{_table(rows)}")
    return summary
