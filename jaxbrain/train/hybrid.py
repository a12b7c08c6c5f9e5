"""The hybrid task + neural objective of neural fine-tuning (Eq. 5) and the held-out neural evaluation.

Every step takes one task batch (images with class labels) and one neural batch (stimuli with responses per
(subject, ROI), :mod:`jaxbrain.train.neural_batches`) and minimises

    L = lambda_task * CE(task batch) + lambda_neural * sum_(subject, ROI) MSE_(subject, ROI)

with lambda_task = 0.1 and lambda_neural = 100 (Table S3). MSE_(s, r) is the mean squared error, over the
items of the neural batch that subject s saw and over the ROI's targets, between the responses and the frozen
readout (W, b) of (s, r) applied to the flattened activations of r's committed layer. The two batches go
through the model in two forward passes, as in the reference code, so a batch-norm model normalises each with its
own batch statistics (one joint pass would mix natural task images with the neural stimuli, whose statistics
differ, and degrade the pretrained features of both).

Held-out evaluation: the readouts' predictions for a split's stimuli, Pearson r per target against the
responses, averaged over targets per (subject, ROI) and then over pairs (``neural_r``), and the MSE
(``neural_mse``, the quantity the objective minimises).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxbrain import metrics, sharding
from jaxbrain.data import stimuli as stimuli_lib
from jaxbrain.train import tasks
from jaxbrain.train import mesh as mesh_lib

PAPER_TASK_WEIGHT = 0.1
PAPER_NEURAL_WEIGHT = 100.0


def readout_predictions(activations: jax.Array, readout: dict) -> jax.Array:
    """(b, ...) activations of the committed layer -> (b, T) float32 readout predictions."""
    flat = activations.reshape(activations.shape[0], -1).astype(jnp.float32)
    return flat @ readout["weight"] + readout["bias"]


@dataclasses.dataclass(frozen=True)
class HybridLoss:
    """``loss_fn`` of the hybrid objective; ``layers`` pairs each "subject/roi" readout with its layer."""

    layers: tuple[tuple[str, str], ...]
    task_weight: float = PAPER_TASK_WEIGHT
    neural_weight: float = PAPER_NEURAL_WEIGHT

    def __call__(self, model, batch: dict, readouts: dict):
        logits, _ = model(batch["task_image"], train=True)
        task = {k[len("task_"):]: v for k, v in batch.items() if k.startswith("task_")}
        ce = tasks.cross_entropy(logits, task).mean()
        _, out = model(batch["image"], train=True)
        neural = jnp.zeros((), jnp.float32)
        for key, layer in self.layers:
            predictions = readout_predictions(out[layer], readouts[key])
            per_item = jnp.mean((predictions - batch[f"target/{key}"]) ** 2, axis=-1)
            present = batch[f"present/{key}"]
            neural = neural + jnp.sum(per_item * present) / jnp.maximum(jnp.sum(present), 1.0)
        loss = self.task_weight * ce + self.neural_weight * neural
        return loss, {"task_ce": ce, "neural_mse": neural}


@dataclasses.dataclass(frozen=True)
class ReadoutPredictions:
    """``eval_fn``: readout predictions of every pair for one batch of stimuli."""

    layers: tuple[tuple[str, str], ...]

    def __call__(self, model, batch: dict, readouts: dict) -> dict:
        _, out = model(batch["image"], train=False)
        return {key: readout_predictions(out[layer], readouts[key]) for key, layer in self.layers}


def neural_scores(trainer, state, readouts_on_mesh: dict, data, layers: dict[str, str], preprocessing,
                  batch_size: int) -> dict[str, float]:
    """Held-out ``neural_r`` and ``neural_mse`` of the readouts on ``data`` (a NeuralSet, ordered batches)."""
    mesh = trainer.mesh
    batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
    rows = mesh_lib.process_rows(mesh, batch_size)
    eval_fn = ReadoutPredictions(tuple(sorted(layers.items())))
    collected: dict[str, list[np.ndarray]] = {key: [] for key in layers}
    for local in stimuli_lib.stimulus_dataset(data.stimuli, list(data.ids), preprocessing, batch_size, rows=rows):
        batch = mesh_lib.global_batch({"image": local["image"]}, mesh)
        for key, value in trainer.evaluate(state, batch, eval_fn, readouts_on_mesh).items():
            collected[key].append(sharding.to_host(value))
    r, mse = [], []
    for key, parts in collected.items():
        predicted = np.concatenate(parts)[:len(data)]  # padding rows of the last batch dropped
        seen = data.rows(key)
        observed = data.targets[key][seen]
        r.append(float(np.nanmean(np.asarray(metrics.pearson_r(observed, predicted[seen])))))
        mse.append(float(np.mean((predicted[seen] - observed) ** 2)))
    return {"neural_r": float(np.mean(r)), "neural_mse": float(np.sum(mse))}
