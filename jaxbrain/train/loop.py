"""The training loop: resume, step, log, evaluate per epoch, checkpoint; the same code on every process.

:func:`fit` restores the latest checkpoint when there is one (state and the position of every data iterator),
then runs steps ``start .. total_steps``. Each step draws one process-local batch from every named iterator,
assembles global arrays (``make_batch``, usually :func:`jaxbrain.train.mesh.global_batch`), runs the jitted
step and logs its metrics with the data-wait time and throughput. At the end of every epoch (and of the run) it
evaluates and writes a checkpoint whose metrics feed the best-checkpoint rule; ``checkpoint_every`` adds
checkpoints inside epochs. Orbax and the metric logger each let one process write.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxbrain.train.checkpoint import Checkpointer
from jaxbrain.train.metrics import MetricLogger
from jaxbrain.train.step import Trainer, TrainState


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    total_steps: int
    steps_per_epoch: int
    images_per_step: int  # global images per step, for throughput
    checkpoint_every: int = 0  # extra checkpoints every this many steps inside epochs (0: at epoch ends only)
    progress: bool = True

    def __post_init__(self):
        if self.total_steps < 1 or self.steps_per_epoch < 1:
            raise ValueError(f"total_steps ({self.total_steps}) and steps_per_epoch ({self.steps_per_epoch}) "
                             "must be >= 1")


def scalars(metrics: Mapping[str, jax.Array]) -> dict[str, float]:
    """Replicated scalar metrics -> Python floats on this host."""
    return {k: float(np.asarray(v.addressable_data(0) if isinstance(v, jax.Array) else v))
            for k, v in metrics.items()}


def sum_over_batches(trainer: Trainer, state: TrainState, batches, eval_fn: Callable, make_batch: Callable,
                     frozen: Any = None) -> dict[str, float]:
    """Sum of ``eval_fn``'s per-batch values over every batch of ``batches`` (one pass)."""
    total: dict[str, float] = {}
    for local in batches:
        for name, value in scalars(trainer.evaluate(state, make_batch(local), eval_fn, frozen)).items():
            total[name] = total.get(name, 0.0) + value
    return total


def _is_boundary(step: int, loop: LoopConfig) -> tuple[bool, bool]:
    epoch_end = step % loop.steps_per_epoch == 0 or step == loop.total_steps
    extra = bool(loop.checkpoint_every) and step % loop.checkpoint_every == 0
    return epoch_end, extra


def fit(trainer: Trainer, iterators: Mapping[str, Any], make_batch: Callable[[dict], dict], *, workdir,
        checkpointer: Checkpointer, loop: LoopConfig, evaluate: Callable[[TrainState], dict] | None = None,
        frozen: Any = None, hooks: Sequence[Callable[[int, TrainState], None]] = ()
        ) -> tuple[TrainState, dict[str, float]]:
    """Train to ``loop.total_steps`` (resuming from ``checkpointer``); returns the final state and its evaluation.

    ``iterators``: name -> Grain iterator of process-local batches (dicts of numpy arrays); ``make_batch``
    gets ``{name: local batch}`` and returns the global batch the step takes. ``evaluate(state) -> {name:
    value}`` runs at every epoch end. ``hooks`` are called as ``hook(step, state)`` after every step.
    """
    state, start = checkpointer.restore(trainer.abstract_state(), iterators)
    if state is None:
        state, start = trainer.init_state(), 0
    logger = MetricLogger(workdir, loop.total_steps, start_step=start, progress=loop.progress)
    results: dict[str, float] = {}
    try:
        for step in range(start + 1, loop.total_steps + 1):
            began = time.perf_counter()
            local = {name: next(it) for name, it in iterators.items()}
            waited = time.perf_counter() - began
            state, metrics = trainer.step(state, make_batch(local), frozen)
            metrics = scalars(metrics)
            seconds = time.perf_counter() - began
            logger.log_step(step, {**metrics, "images_per_s": loop.images_per_step / seconds, "data_wait_s": waited})
            epoch_end, extra = _is_boundary(step, loop)
            if epoch_end:
                epoch = math.ceil(step / loop.steps_per_epoch)
                results = scalars(evaluate(state)) if evaluate is not None else {}
                logger.log_eval(step, epoch, results)
                checkpointer.save(step, state, iterators, metrics=results, force=True)
            elif extra:
                checkpointer.save(step, state, iterators, force=True)
            for hook in hooks:
                hook(step, state)
        checkpointer.wait()
        if start == loop.total_steps and evaluate is not None:  # restored a finished run
            results = scalars(evaluate(state))
    finally:
        logger.close()
    return state, results
