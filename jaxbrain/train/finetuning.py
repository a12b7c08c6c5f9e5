"""One hybrid neural fine-tuning run (Section 3, Eq. 4-5, Appendix G): readouts, training, before/after.

Steps: (1) the neural train split's items for the chosen (subject, ROI) pairs (a ``fraction`` of them, or
their stimulus-response permutation for the control); (2) frozen ridge readouts fitted on the unprojected
activations of each ROI's committed layer of the model before fine-tuning; (3) optionally LoRA adapters
(:mod:`jaxbrain.models.lora`; only adapters and head trained); (4) training on the hybrid objective
(:mod:`jaxbrain.train.hybrid`) with one task batch from the continuous task stream and one neural batch every
step, an epoch being one pass over the neural items; AdamW with warmup and cosine per iteration; (5) held-out
neural r and MSE of the frozen readouts on the test split after every epoch, and task top-1 on the task
validation images before and after. The returned model has any adapters merged into its weights.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import nnx

from jaxbrain import metrics, results, ridge, scoring
from jaxbrain.models import lora, registry
from jaxbrain.train import batches, hybrid, input_pipeline, loop, neural_batches, readouts, supervised
from jaxbrain.train import mesh as mesh_lib
from jaxbrain.train.checkpoint import Checkpointer

# The paper's fine-tuning ROI per dataset family, tried in this order against a benchmark's ROIs.
PAPER_TARGET_ROIS = ("IT", "ventral", "OP", "MLO+MLP")


def target_rois(dataset, requested: Sequence[str] = ()) -> list[str]:
    """The requested ROIs (checked), or the paper's target ROI of the benchmark (IT, ventral, OP, MLO+MLP)."""
    if requested:
        unknown = [r for r in requested if r not in dataset.rois]
        if unknown:
            raise ValueError(f"{dataset.name}: no ROIs {unknown}; its ROIs are {list(dataset.rois)}")
        return list(requested)
    for roi in PAPER_TARGET_ROIS:
        if roi in dataset.rois:
            return [roi]
    raise ValueError(f"{dataset.name}: none of the paper's target ROIs {PAPER_TARGET_ROIS} is present; name the "
                     f"ROIs to fine-tune on (its ROIs are {list(dataset.rois)})")


def committed_layers(score_workdir, model: str, benchmark: str, rois: Sequence[str]) -> dict[str, str]:
    """ROI -> layer committed by a score run (its results.csv test rows of ``model`` on ``benchmark``)."""
    table = results.read_table(score_workdir)
    rows = table[(table.model == model) & (table.benchmark == benchmark) & (table.stage == "test")]
    layers = {}
    for roi in rois:
        found = rows[rows.roi == roi].layer.dropna().unique()
        if len(found) != 1:
            raise ValueError(f"{score_workdir}/results.csv: expected one committed layer for model {model}, "
                             f"benchmark {benchmark}, ROI {roi}; found {list(found)}")
        layers[roi] = str(found[0])
    return layers


def kept_targets(dataset, pairs, min_ceiling: float) -> dict[str, np.ndarray]:
    """Reliable targets of every pair (the scoring threshold on the noise ceiling)."""
    kept = {}
    for subject, roi in pairs:
        mask = dataset.scored_targets(subject, roi, min_ceiling)
        if not mask.any():
            raise ValueError(f"{dataset.name}: subject {subject}, ROI {roi}: no target passes the ceiling threshold")
        kept[readouts.pair_key(subject, roi)] = mask
    return kept


@dataclasses.dataclass(frozen=True)
class Task:
    """The task stream: training and validation image sources (prepared, with labels)."""

    train: Any
    validation: Any


def _fit_readouts(model, spec, train_set, layers: Mapping[str, str], config) -> dict[str, readouts.Readout]:
    feats = readouts.layer_features(model, spec, train_set.stimuli, train_set.ids, list(layers.values()),
                                    config.eval_batch_size)
    targets = {key: (train_set.rows(key), train_set.targets[key][train_set.rows(key)]) for key in train_set.targets}
    return readouts.fit_readouts(feats, targets, layers, alphas=np.asarray(config.alphas, np.float64))


def _iterators(spec, task: Task, train_set, config, mesh, task_batch: int, neural_batch: int, seed: int):
    task_it = input_pipeline.train_iterator(
        task.train, supervised.family_recipe(spec, config.recipe), global_batch_size=task_batch, seed=seed,
        num_epochs=None, rows=mesh_lib.process_rows(mesh, task_batch), num_threads=config.num_threads)
    neural_ds = neural_batches.train_batches(train_set, spec.preprocessing, neural_batch,
                                             mesh_lib.process_rows(mesh, neural_batch), seed=seed,
                                             augment_images=config.augment)
    return {"task": task_it, "neural": batches.iterate(neural_ds, config.num_threads)}


def _merged_batch(mesh):
    def make(local):
        fields = {f"task_{k}": v for k, v in local["task"].items()}
        return mesh_lib.global_batch({**fields, **local["neural"]}, mesh)
    return make


def fine_tune(spec: registry.ModelSpec, model: nnx.Module, dataset, pairs, layers: Mapping[str, str], task: Task,
              config, workdir, *, fraction: float, seed: int, permute: bool, mesh, settings: dict
              ) -> tuple[nnx.Module, dict]:
    """Fine-tune ``model`` (changed in place; see the module docstring); returns the merged model and a summary."""
    workdir = pathlib.Path(workdir)
    kept = kept_targets(dataset, pairs, config.min_ceiling)
    train_set = neural_batches.neural_set(dataset, "train", pairs, kept, fraction=fraction, seed=seed, permute=permute)
    test_set = neural_batches.neural_set(dataset, "test", pairs, kept)
    pair_layers = {readouts.pair_key(s, r): layers[r] for s, r in pairs}
    fitted = _fit_readouts(model, spec, train_set, pair_layers, config)
    readouts.save(workdir / "readouts.npz", fitted)
    wrt = nnx.Param
    if config.lora.rank:
        lora.apply_lora(model, config.lora.rank, config.lora.alpha, config.lora.dropout, seed=seed)
        wrt = lora.trainable_filter(config.lora.head)
    counts = lora.parameter_counts(model, config.lora.head) if config.lora.rank else {
        "trainable": registry.param_count(model), "total": registry.param_count(model)}
    neural_batch = supervised.global_batch_size(config.neural_batch_size, len(train_set), mesh)
    task_batch = supervised.global_batch_size(config.task_batch_size, len(task.train), mesh)
    steps = neural_batches.steps_per_epoch(train_set, neural_batch)
    loss = hybrid.HybridLoss(tuple(sorted(pair_layers.items())), config.task_weight, config.neural_weight)
    trainer = supervised.make_trainer(model, config, mesh, loss, total_steps=config.epochs * steps,
                                      steps_per_epoch=steps, wrt=wrt, seed=seed)
    frozen = readouts.frozen_arrays(fitted)
    frozen = mesh_lib.place(frozen, mesh_lib.tree_shardings(frozen, mesh, tuple(config.mesh.rules)))

    def evaluate(state):
        return hybrid.neural_scores(trainer, state, frozen, test_set, pair_layers, spec.preprocessing,
                                    config.eval_batch_size)

    def task_top1(state):
        return supervised.accuracy(trainer, state, task.validation, spec.preprocessing, config.eval_batch_size,
                                   config.num_threads)["top1"]

    initial = trainer.init_state()
    before = dict(evaluate(initial), task_top1=task_top1(initial))
    checkpointer = Checkpointer(workdir / "checkpoints", dict(settings, neural_batch=neural_batch,
                                                              task_batch=task_batch),
                                keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
    state, after = loop.fit(
        trainer, _iterators(spec, task, train_set, config, mesh, task_batch, neural_batch, seed), _merged_batch(mesh),
        workdir=workdir, checkpointer=checkpointer, evaluate=evaluate, frozen=frozen,
        loop=loop.LoopConfig(total_steps=config.epochs * steps, steps_per_epoch=steps,
                             images_per_step=task_batch + neural_batch, checkpoint_every=config.checkpoint.every,
                             progress=config.progress))
    checkpointer.close()
    after = dict(after, task_top1=task_top1(state))
    tuned = trainer.host_model(state)
    if config.lora.rank:
        tuned = lora.merge(tuned)
    return tuned, dict(before=before, after=after, n_items=len(train_set), steps=config.epochs * steps,
                       params=counts, alphas={k: r.alpha for k, r in fitted.items()})


def refit_scores(model: nnx.Module, spec: registry.ModelSpec, dataset, pairs, layers: Mapping[str, str], *,
                 min_ceiling: float, alphas, batch_size: int = 64) -> dict[str, float]:
    """Test-split r and r_nc of ridges refitted on the true train split at each ROI's layer (unprojected),
    averaged over targets, then over pairs: the alignment a rescoring measures, for one layer per ROI."""
    kept = kept_targets(dataset, pairs, min_ceiling)
    train = neural_batches.neural_set(dataset, "train", pairs, kept)
    test = neural_batches.neural_set(dataset, "test", pairs, kept)
    ids = list(train.ids) + [i for i in test.ids if i not in set(train.ids)]
    position = {stimulus_id: k for k, stimulus_id in enumerate(ids)}
    feats = readouts.layer_features(model, spec, dataset.stimuli, ids, [layers[r] for _, r in pairs], batch_size)
    r_all, r_nc_all = [], []
    for subject, roi in pairs:
        key = readouts.pair_key(subject, roi)
        x = feats[layers[roi]]
        tr, te = train.rows(key), test.rows(key)
        x_train = x[[position[train.ids[i]] for i in tr]]
        x_test = x[[position[test.ids[i]] for i in te]]
        fit = ridge.RidgeCV(alphas=alphas).fit(x_train, train.targets[key][tr])
        r = np.asarray(metrics.pearson_r(test.targets[key][te], fit.predict(x_test).astype(np.float32)))
        ceiling = dataset.ceiling(subject, roi)[kept[key]]
        r_all.append(float(np.nanmean(r)))
        r_nc_all.append(float(np.nanmean(scoring.normalise(r, ceiling))))
    return {"refit_r": float(np.mean(r_all)), "refit_r_nc": float(np.mean(r_nc_all))}
