"""Supervised pretraining of registry backbones on a prepared image folder or per-class subsets of it.

For every (model, samples_per_class, seed) of the config's grid: the per-class subset (``0``: every image) of
the training split with that seed, D = its size; training by :func:`jaxbrain.train.supervised.train_classifier`
in ``workdir/runs/<label>``; top-1/top-5 on the validation split after every epoch; the final model exported to
``workdir/export/<label>.safetensors`` (directly scorable: ``configs/score.py:model=NAME,weights=PATH``) with
``<label>.json`` beside it (N, FLOPs_fwd, D, C = D x FLOPs_fwd, settings). ``inventory.csv`` collects the
inventory rows of every finished run for ``fit_scaling``; ``results.csv`` holds the validation metrics
(stage ``val``). A finished run is skipped on rerun when its settings match; an interrupted one resumes.
"""

from __future__ import annotations

import itertools
import logging
import pathlib

import pandas as pd

from jaxbrain import inventory, results
from jaxbrain.models import registry
from jaxbrain.train import export, image_folder, supervised
from jaxbrain.train import mesh as mesh_lib

log = logging.getLogger(__name__)


def open_images(config, workdir: pathlib.Path) -> image_folder.PreparedImages:
    """The prepared directory of ``config.data.prepared``, or ``config.data.source`` prepared into the workdir."""
    if config.data.prepared:
        return image_folder.load_prepared(config.data.prepared)
    if not config.data.source:
        raise ValueError("set config.data.prepared (a prepared image directory) or config.data.source "
                         "(a labelled image folder)")
    return image_folder.prepare_image_folder(config.data.source, workdir / "data" / "images",
                                             validation_fraction=config.data.validation_fraction,
                                             split_seed=config.data.split_seed)


def run_label(model: str, samples_per_class: int, seed: int) -> str:
    return f"{model}_spc{samples_per_class or 'all'}_seed{seed}"


def _settings(config, images, model: str, samples_per_class: int, seed: int) -> dict:
    keys = ("epochs", "batch_size", "recipe", "compute_dtype", "accum_steps")
    return dict(model=model, samples_per_class=samples_per_class, seed=seed, data=images.fingerprint,
                optimizer=config.optimizer.to_dict(), **{k: config[k] for k in keys})


def train_one(config, images, model_name: str, samples_per_class: int, seed: int, workdir, mesh) -> dict:
    """Train (or resume, or skip when exported) one grid point; returns its metadata."""
    label = run_label(model_name, samples_per_class, seed)
    stem = workdir / "export" / label
    settings = _settings(config, images, model_name, samples_per_class, seed)
    done = export.read_metadata(stem)
    if done is not None and done.get("settings") == settings:
        log.info("%s already trained with these settings; skipping", label)
        return done
    spec = registry.get(model_name)
    train = image_folder.class_subset(images.source("train"), samples_per_class or None, seed=seed)
    val = images.source(config.data.eval_split)
    model, metrics = supervised.train_classifier(spec, train, val, config, workdir / "runs" / label, seed=seed,
                                                 mesh=mesh, settings=settings)
    row = export.inventory_row(label, spec, model, samples=len(train), dataset=pathlib.Path(images.path).name)
    metadata = dict(row, registry_name=model_name, num_classes=train.num_classes, samples_per_class=samples_per_class,
                    seed=seed, validation=metrics, settings=settings)
    export.export(model, stem, metadata)
    return export.read_metadata(stem)


def _result_rows(metadata: dict, dataset: str) -> list[dict]:
    return [dict(model=metadata["model"], benchmark=dataset, subject="all", roi="", layer="", stage="val",
                 metric=metric, value=metadata["validation"][metric], seed=metadata["seed"])
            for metric in ("top1", "top5", "loss")]


def run(config, workdir) -> dict:
    workdir = pathlib.Path(workdir)
    images = open_images(config, workdir)
    mesh = mesh_lib.make_mesh(config.mesh.fsdp)
    store = results.ResultStore(workdir)
    dataset = pathlib.Path(images.path).name
    done = []
    for model_name, spc, seed in itertools.product(config.models, config.samples_per_class, config.seeds):
        metadata = train_one(config, images, model_name, int(spc), int(seed), workdir, mesh)
        store.put((metadata["model"],), _result_rows(metadata, dataset))
        done.append(metadata)
        print(f"{metadata['model']}: top-1 {metadata['validation']['top1']:.3f}, top-5 "
              f"{metadata['validation']['top5']:.3f} (D = {metadata['samples']:.0f}, N = {metadata['params']:.3g}, "
              f"FLOPs = {metadata['flops']:.3g})")
    rows = pd.DataFrame([{c: m[c] for c in inventory.COLUMNS} for m in done], columns=list(inventory.COLUMNS))
    results.write_csv(workdir / "inventory.csv", rows)
    summary = {m["model"]: {"validation": m["validation"], "weights": str(workdir / "export" / m["weights"]),
                            "params": m["params"], "flops": m["flops"], "samples": m["samples"],
                            "compute": m["compute"]} for m in done}
    results.write_json(workdir / "summary.json", summary)
    return summary
