"""Prepares a labelled image folder as a tfds ArrayRecord directory (workdir/<name>) for pretraining.

Thin wiring over :func:`jaxbrain.train.image_folder.prepare_image_folder`: the directory is built in a temporary
folder and renamed into place when complete; a rerun with the same content and settings is skipped. The
summary (class names, split sizes, fingerprint) goes to `workdir/summary.json` under the dataset's name.
"""

from __future__ import annotations

import json
import logging
import pathlib

from jaxbrain import results
from jaxbrain.train import image_folder

log = logging.getLogger(__name__)


def run(config, workdir) -> dict:
    """Prepares `config.source_dir` into `workdir/<config.name>`; returns the summary of the directory."""
    if not config.source_dir:
        raise ValueError("config.source_dir is empty; pass source_dir=<labelled image folder>")
    if not config.name or "/" in config.name or config.name.startswith("."):
        raise ValueError(f"config.name {config.name!r} must be a plain directory name")
    workdir = pathlib.Path(workdir)
    prepared = image_folder.prepare_image_folder(
        config.source_dir, workdir / config.name, validation_fraction=config.validation_fraction,
        split_seed=config.split_seed, overwrite=config.overwrite)
    summary = {"path": prepared.path, "num_classes": prepared.num_classes, "class_names": prepared.class_names,
               "split_sizes": prepared.split_sizes, "fingerprint": prepared.fingerprint}
    summary_path = workdir / "summary.json"
    merged = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    merged[config.name] = summary
    results.write_json(summary_path, merged)
    sizes = ", ".join(f"{split} {n}" for split, n in prepared.split_sizes.items())
    print(f"{prepared.path}: {prepared.num_classes} classes, {sizes}")
    return summary
