"""Converts a public dataset release into a validated NeuralDataset file (workdir/<dataset>.h5).

The reader is chosen by `config.dataset` from `jaxbrain.data.sources.READERS` and called as
`reader(config.source_dir, **config.options)` (see `jaxbrain.data.prepare`). The output is named after the
dataset, written atomically, and its checksums verified in full; a rerun skips a dataset whose reader, options
and source folder are unchanged. Several datasets may share one workdir; `summary.json` holds one entry per
prepared file.
"""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np

from jaxbrain import results
from jaxbrain.data import neural, prepare, sources

log = logging.getLogger(__name__)


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
    """Prepares `config.dataset` from `config.source_dir` into `workdir/<dataset name>.h5`; returns the summary."""
    workdir = pathlib.Path(workdir)
    sources.get_reader(config.dataset)
    if not config.source_dir:
        raise ValueError(f"dataset {config.dataset!r}: config.source_dir is empty; pass "
                         "--config.source_dir=<folder of the release>")
    release = prepare.ReleaseEntry(config.dataset, pathlib.Path(config.source_dir).expanduser(),
                                   dict(config.get("options", {}) or {}))
    path, skipped = prepare.convert(release, workdir, embed_stimuli=bool(config.get("embed_stimuli", False)),
                                    overwrite=bool(config.get("overwrite", False)))
    ds = neural.load(path, lazy=True, verify=True)  # check what is on disk, not what was in memory
    return _finish(ds, path, workdir, skipped=skipped)


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
