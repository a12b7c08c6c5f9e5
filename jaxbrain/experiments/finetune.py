"""Hybrid neural fine-tuning of a backbone (task + frozen-readout neural loss), with sweeps and controls.

For every grid point (neural-data fraction x seed x learning rate x epochs, plus the stimulus-response
permutation control when asked) :func:`jaxbrain.train.finetuning.fine_tune` runs in ``workdir/runs/<label>``
from the same starting weights; the fine-tuned model (adapters merged) is exported to
``workdir/export/<label>.safetensors`` (scorable by the score experiment). Before and after each run: held-out
neural r of the frozen readouts, task top-1, and the alignment of ridges refitted on the true train split at the
committed layers (``refit_r``, ``refit_r_nc``). results.csv rows (stage ``finetune``) carry these per run, with
the baseline under stage ``baseline``; ``finetune.csv`` is the sweep table (one row per run: fraction, seed,
lr, epochs, control, before/after values and their change) and its ``neural_fraction`` column is the x axis of
the fine-tuning data law. A finished run is skipped on rerun when its settings match.
"""

from __future__ import annotations

import itertools
import logging
import pathlib

import numpy as np
import pandas as pd
from flax import nnx

from jaxbrain import features, pipeline, results
from jaxbrain.data import neural, sources
from jaxbrain.models import registry
from jaxbrain.train import export, finetuning, image_folder
from jaxbrain.train import mesh as mesh_lib

log = logging.getLogger(__name__)


def open_benchmark(entry: str, workdir: pathlib.Path) -> neural.NeuralDataset:
    """A NeuralDataset from an HDF5 file or ``reader:source_dir`` (converted once into workdir/data)."""
    reader, sep, source = entry.partition(":")
    if not sep or entry.endswith(".h5"):
        return neural.load(entry)
    path = workdir / "data" / f"{reader}.h5"
    if not path.is_file():
        neural.save(sources.get_reader(reader)(pathlib.Path(source).expanduser()), path)
    return neural.load(path)


def task_images(config, workdir: pathlib.Path) -> finetuning.Task:
    data = config.task
    if data.prepared:
        images = image_folder.load_prepared(data.prepared)
    elif data.source:
        images = image_folder.prepare_image_folder(data.source, workdir / "data" / "task_images",
                                                   validation_fraction=data.validation_fraction)
    else:
        raise ValueError("set config.task.prepared or config.task.source (the task image stream)")
    return finetuning.Task(images.source("train"), images.source("validation"))


def base_model(config) -> tuple[registry.ModelSpec, nnx.Module]:
    spec = registry.get(config.model.name)
    model = spec.build(rngs=nnx.Rngs(config.model.seed), num_classes=config.model.num_classes or None)
    if config.model.weights:
        spec.load_weights(model, pathlib.Path(config.model.weights).expanduser())
    return spec, model


def grid(config):
    controls = (False, True) if config.permutation_control else (False,)
    for fraction, seed, lr, epochs, permute in itertools.product(config.fractions, config.seeds, config.lrs,
                                                                 config.epoch_grid, controls):
        label = f"{config.model.name}_ft_frac{fraction:g}_lr{lr:g}_ep{epochs}_seed{seed}" + ("_perm" if permute else "")
        yield label, dict(fraction=float(fraction), seed=int(seed), lr=float(lr), epochs=int(epochs), permute=permute)


def run_point(config, point: dict, label: str, context: dict, workdir: pathlib.Path) -> dict:
    """Fine-tune one grid point (or read its finished summary)."""
    settings = dict(point, model=config.model.to_dict(), benchmark=context["dataset"].name, layers=context["layers"],
                    rois=context["rois"], lora=config.lora.to_dict(), optimizer=config.optimizer.to_dict(),
                    weights=[config.task_weight, config.neural_weight], compute_dtype=config.compute_dtype)
    stem = workdir / "export" / label
    done = export.read_metadata(stem)
    if done is not None and done.get("settings") == settings:
        log.info("%s already fine-tuned with these settings; skipping", label)
        return done
    run_config = config.copy_and_resolve_references()
    with run_config.unlocked():
        run_config.epochs, run_config.optimizer.lr = point["epochs"], point["lr"]
    spec, model = base_model(config)
    tuned, summary = finetuning.fine_tune(
        spec, model, context["dataset"], context["pairs"], context["layers"], context["task"], run_config,
        workdir / "runs" / label, fraction=point["fraction"], seed=point["seed"], permute=point["permute"],
        mesh=context["mesh"], settings=settings)
    summary["after"].update(context["refit"](tuned, spec))
    export.export(tuned, stem, dict(summary, registry_name=spec.name, settings=settings, **point))
    return export.read_metadata(stem)


def _rows(label: str, stage: str, values: dict, benchmark: str, rois, seed: int) -> list[dict]:
    return [dict(model=label, benchmark=benchmark, subject="all", roi="+".join(rois), layer="", stage=stage,
                 metric=metric, value=float(value), seed=seed) for metric, value in values.items()]


def rescore(model: nnx.Module, spec: registry.ModelSpec, label: str, benchmarks, config) -> list[dict]:
    """Test rows of the unchanged score pipeline (exact-kernel ridge, i.e. no projection) on every benchmark."""
    scoring_config = pipeline.ScoringConfig(alphas=tuple(config.alphas), min_ceiling=config.min_ceiling,
                                            similarity=False)
    layers = list(config.rescore.layers or spec.layers)
    rows = []
    for dataset in benchmarks:
        def extract(names, dataset=dataset):
            return features.extract(model, spec, dataset.stimuli, pipeline.stimulus_order(dataset), names,
                                    keep="gram", batch_size=config.eval_batch_size, progress=False)
        scores = pipeline.score_model(extract, dataset, layers, dict(zip(spec.layers, spec.depths)), scoring_config,
                                      gram=True)
        rows += scores.test_rows(label, config.model.seed)
    return rows


def alignment_change(rows: list[dict], baseline_rows: list[dict], label: str) -> list[dict]:
    """Fig. 5 layout: per benchmark, fine-tuned minus baseline test r_nc (cross-subject rows, mean over ROIs)."""
    def per_benchmark(frame):
        frame = pd.DataFrame(frame)
        frame = frame[(frame.stage == "test") & (frame.metric == "r_nc") & (frame.subject.astype(str) == "all")]
        return frame.groupby("benchmark")["value"].mean()
    change = per_benchmark(rows) - per_benchmark(baseline_rows)
    return [dict(model=label, benchmark=bench, subject="all", roi="", layer="", stage="change", metric="delta_r_nc",
                 value=float(value), seed=0) for bench, value in change.items()]


def _layers(config, dataset, rois) -> dict[str, str]:
    if config.layers:
        given = dict(item.split("=", 1) for item in config.layers)
        missing = [r for r in rois if r not in given]
        if missing:
            raise ValueError(f"config.layers gives no layer for ROIs {missing}")
        return {r: given[r] for r in rois}
    if not config.score_results:
        raise ValueError("set config.score_results (a score workdir) or config.layers (roi=layer,...)")
    return finetuning.committed_layers(config.score_results, config.model.label or config.model.name, dataset.name,
                                       rois)


def sweep_row(label: str, meta: dict, baseline: dict) -> dict:
    before = dict(meta["before"], **baseline)
    after = meta["after"]
    row = dict(model=label, neural_fraction=100.0 * meta["fraction"], fraction=meta["fraction"], seed=meta["seed"],
               lr=meta["lr"], epochs=meta["epochs"], control="permuted" if meta["permute"] else "none",
               n_items=meta["n_items"], trainable_params=meta["params"]["trainable"],
               total_params=meta["params"]["total"])
    for name in sorted(after):
        row[f"before_{name}"], row[f"after_{name}"] = before.get(name, np.nan), after[name]
        row[f"delta_{name}"] = after[name] - before.get(name, np.nan)
    return row


def run(config, workdir) -> dict:
    workdir = pathlib.Path(workdir)
    dataset = open_benchmark(config.benchmark, workdir)
    rois = finetuning.target_rois(dataset, tuple(config.rois))
    pairs = [(subject, roi) for subject in dataset.subjects for roi in rois]
    layers = _layers(config, dataset, rois)
    alphas = np.asarray(config.alphas, np.float64)

    def refit(model, spec):
        return finetuning.refit_scores(model, spec, dataset, pairs, layers, min_ceiling=config.min_ceiling,
                                       alphas=alphas, batch_size=config.eval_batch_size)

    context = dict(dataset=dataset, rois=rois, pairs=pairs, layers=layers, task=task_images(config, workdir),
                   mesh=mesh_lib.make_mesh(config.mesh.fsdp), refit=refit)
    store = results.ResultStore(workdir)
    if not store.has(("baseline",)):
        spec, model = base_model(config)
        store.put(("baseline",), _rows(f"{config.model.name}_baseline", "baseline", refit(model, spec),
                                       dataset.name, rois, config.model.seed))
    baseline = {m: v for m, v in zip(store.get(("baseline",)).metric, store.get(("baseline",)).value)}
    benchmarks = [dataset] + [open_benchmark(entry, workdir) for entry in config.rescore.benchmarks]
    if config.rescore.enabled and not store.has(("rescore", "baseline")):
        spec, model = base_model(config)
        store.put(("rescore", "baseline"), rescore(model, spec, f"{config.model.name}_baseline", benchmarks, config))
    sweep = []
    for label, point in grid(config):
        meta = run_point(config, point, label, context, workdir)
        if config.rescore.enabled and not store.has(("rescore", label)):
            spec = registry.get(config.model.name)
            tuned = spec.build(rngs=nnx.Rngs(0), num_classes=config.model.num_classes or None)
            spec.load_weights(tuned, workdir / "export" / meta["weights"])
            rows = rescore(tuned, spec, label, benchmarks, config)
            base_rows = store.get(("rescore", "baseline")).to_dict("records")
            store.put(("rescore", label), rows + alignment_change(rows, base_rows, label))
        row = sweep_row(label, meta, baseline)
        sweep.append(row)
        store.put((label,), [r for stage, prefix in (("before", "before_"), ("finetune", "after_"),
                                                      ("change", "delta_"))
                             for r in _rows(label, stage, {k[len(prefix):]: v for k, v in row.items()
                                                           if k.startswith(prefix)}, dataset.name, rois,
                                            point["seed"])])
        print(f"{label}: neural r {row['before_neural_r']:.3f} -> {row['after_neural_r']:.3f}, refit r_nc "
              f"{row['before_refit_r_nc']:.3f} -> {row['after_refit_r_nc']:.3f}, task top-1 "
              f"{row['before_task_top1']:.3f} -> {row['after_task_top1']:.3f}")
    table = pd.DataFrame(sweep)
    results.write_csv(workdir / "finetune.csv", table)
    summary = {"baseline": baseline, "runs": {row["model"]: row for row in sweep}}
    results.write_json(workdir / "summary.json", summary)
    return summary
