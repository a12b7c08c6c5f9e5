"""Supervised classification training of a registry backbone on a prepared image source.

Wiring of the trainer parts for one run: the family's training recipe (DeiT for ViTs, the torchvision ResNet
recipe otherwise, unless the config names one), per-epoch batches from :mod:`jaxbrain.train.input_pipeline`
(``num_epochs`` mode: every epoch a fresh permutation, its last partial batch dropped), AdamW with warmup and
cosine over ``epochs x steps_per_epoch`` iterations, top-1/top-5 on the validation split after every epoch,
checkpoints in ``workdir/checkpoints`` (the last ``keep`` and the best validation top-1), metric files and plots
in ``workdir``. A run that was stopped resumes from its latest checkpoint.

The global batch is ``config.batch_size`` unless the training source is smaller (tiny per-class subsets): then
the largest multiple of the device count that fits, so every epoch holds at least one step.
"""

from __future__ import annotations

import pathlib
from typing import Any

from flax import nnx

from jaxbrain.models import registry
from jaxbrain.train import augment, input_pipeline, loop, optim, tasks
from jaxbrain.train import mesh as mesh_lib
from jaxbrain.train.checkpoint import Checkpointer
from jaxbrain.train.step import Trainer


def family_recipe(spec: registry.ModelSpec, name: str = "auto") -> augment.Recipe:
    """The training recipe ``name``, or with "auto" DeiT's for ViTs and torchvision's ResNet recipe otherwise."""
    if name == "auto":
        name = "deit" if spec.family == "vit" else "resnet"
    return augment.recipe(name, spec.preprocessing)


def global_batch_size(requested: int, n_examples: int, mesh) -> int:
    """``requested`` clipped to the examples available, as a multiple of the mesh's device count."""
    n_dev = mesh.devices.size
    size = min(requested, n_examples) // n_dev * n_dev
    if size < n_dev:
        raise ValueError(f"{n_examples} training examples cannot fill one batch row per device ({n_dev} devices)")
    return size


def make_trainer(model: nnx.Module, config, mesh, loss_fn, *, total_steps: int, steps_per_epoch: int,
                 wrt=nnx.Param, seed: int = 0) -> Trainer:
    """A :class:`Trainer` with AdamW + warmup/cosine from ``config.optimizer`` (warmup given in epochs)."""
    warmup = min(total_steps, round(config.optimizer.warmup_epochs * steps_per_epoch))
    opt = optim.OptimizerConfig.from_config(config.optimizer, total_steps, warmup)
    return Trainer(model, optim.adamw(opt), loss_fn, mesh, wrt=wrt, compute_dtype=config.compute_dtype,
                   accum_steps=config.accum_steps, rules=tuple(config.mesh.rules), seed=seed,
                   schedule=optim.schedule(opt))


def eval_batches(source: Any, preprocessing: Any, mesh, batch_size: int, num_threads: int = 2):
    """One ordered pass of evaluation batches (this process's rows), padded to whole global batches."""
    batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
    return input_pipeline.eval_iterator(source, preprocessing, global_batch_size=batch_size,
                                        rows=mesh_lib.process_rows(mesh, batch_size), num_threads=num_threads)


def eval_arrays(mesh):
    """``make_batch`` for evaluation batches: the image, label and mask fields as global arrays."""
    return lambda local: mesh_lib.global_batch({k: local[k] for k in ("image", "label", "mask")}, mesh)


def accuracy(trainer: Trainer, state, source: Any, preprocessing: Any, batch_size: int,
             num_threads: int = 2) -> dict[str, float]:
    """Top-1, top-5 and mean cross-entropy of ``state``'s model on every image of ``source``."""
    batches = eval_batches(source, preprocessing, trainer.mesh, batch_size, num_threads)
    totals = loop.sum_over_batches(trainer, state, batches, tasks.classification_counts, eval_arrays(trainer.mesh))
    return tasks.summarise_counts(totals)


def train_classifier(spec: registry.ModelSpec, train_source: Any, val_source: Any, config, workdir, *,
                     seed: int, mesh, settings: dict) -> tuple[nnx.Module, dict]:
    """Train ``spec``'s model (``seed``) on ``train_source``; returns the trained model and final validation
    metrics. ``settings`` fingerprint the run in its checkpoints (a mismatch refuses to resume)."""
    workdir = pathlib.Path(workdir)
    model = spec.build(rngs=nnx.Rngs(seed), num_classes=train_source.num_classes)
    batch = global_batch_size(config.batch_size, len(train_source), mesh)
    steps_per_epoch = len(train_source) // batch
    total = config.epochs * steps_per_epoch
    trainer = make_trainer(model, config, mesh, tasks.classification_loss, total_steps=total,
                           steps_per_epoch=steps_per_epoch, seed=seed)
    train_it = input_pipeline.train_iterator(
        train_source, family_recipe(spec, config.recipe), global_batch_size=batch, seed=seed,
        num_epochs=config.epochs, rows=mesh_lib.process_rows(mesh, batch), num_threads=config.num_threads,
        worker_count=config.worker_count)
    checkpointer = Checkpointer(workdir / "checkpoints", dict(settings, global_batch=batch),
                                keep=config.checkpoint.keep, best_metric="top1",
                                async_save=config.checkpoint.async_save)

    def evaluate(state):
        return accuracy(trainer, state, val_source, spec.preprocessing, config.eval_batch_size, config.num_threads)

    state, final = loop.fit(trainer, {"train": train_it}, lambda local: mesh_lib.global_batch(local["train"], mesh),
                     workdir=workdir, checkpointer=checkpointer, evaluate=evaluate,
                     loop=loop.LoopConfig(total_steps=total, steps_per_epoch=steps_per_epoch, images_per_step=batch,
                                          checkpoint_every=config.checkpoint.every, progress=config.progress))
    checkpointer.close()
    return trainer.host_model(state), dict(final, epochs=config.epochs, steps=total, global_batch=batch)
