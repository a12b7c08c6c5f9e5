"""Training and scoring one readout system (jaxbrain.probes) with the trainer's jitted step and checkpoints.

The protocol (docs/method.md, Attention probes and readouts; Tables S5-S6): MSE on targets z-scored per split
with that split's own statistics; AdamW (lr 1e-4, weight decay 1e-4) after global-norm clipping at 1.0; the
learning rate follows a cosine from lr to 0 that is stepped once per epoch (lr_e = lr (1 + cos(pi e / E)) / 2
for the whole epoch e); bf16 compute with float32 parameters and loss (jaxbrain.train.step); batches of 256.
Each epoch draws a new order of the subjects and runs through them one after another, each subject's rows in a
new random order (``default_rng([seed, epoch])``), so a run restored after epoch e draws what an uninterrupted
run draws. Batches are padded to the batch size with masked rows (one compiled step for every subject and
every last batch); the subject's index and target mask travel beside the batch. A checkpoint is written after
every epoch (Orbax, jaxbrain.train.checkpoint) and a rerun resumes from the latest one. The last epoch's model
is scored: Pearson r per target on the test split, normalised by the noise ceiling (jaxbrain.scoring).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxbrain import probes, scoring
from jaxbrain.train import checkpoint, step
from jaxbrain.train import mesh as mesh_lib


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation of a readout (Table S6 defaults)."""

    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    batch_size: int = 256
    compute_dtype: str = "bfloat16"
    devices: int = 1  # data-parallel devices (0: every local device)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"probe training needs epochs >= 1, batch_size >= 1 and lr > 0, got {self}")


@dataclasses.dataclass(frozen=True)
class SubjectData:
    """One subject of a system: rows into the shared token array and z-scored targets per split."""

    train_rows: np.ndarray  # (n_train,) int
    y_train: np.ndarray     # (n_train, N)
    test_rows: np.ndarray   # (n_test,)
    y_test: np.ndarray      # (n_test, N)
    ceiling: np.ndarray     # (N,) percent

    @property
    def n_targets(self) -> int:
        return int(self.y_train.shape[1])


def zscore(y: np.ndarray) -> np.ndarray:
    """Targets z-scored with their own split's mean and (population) standard deviation; constant -> 0."""
    y = np.asarray(y, np.float64)
    sd = y.std(axis=0)
    return ((y - y.mean(axis=0)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def subject_data(positions: np.ndarray, n_train: int, y_train, y_test, ceiling, fraction_rows=None) -> SubjectData:
    """A subject from the score pipeline's layout; ``fraction_rows`` (indices into the train split) subsamples."""
    rows, y = positions[:n_train], np.asarray(y_train)
    if fraction_rows is not None:
        rows, y = rows[fraction_rows], y[fraction_rows]
    return SubjectData(np.asarray(rows), zscore(y), np.asarray(positions[n_train:]), zscore(y_test),
                       np.asarray(ceiling, np.float64))


def epoch_plan(n_rows: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[tuple[int, np.ndarray]]:
    """(subject index, row indices) of every batch of one epoch: subjects in a fresh order, one after another."""
    rng = np.random.default_rng([seed, epoch])
    plan = []
    for subject in rng.permutation(len(n_rows)):
        order = rng.permutation(n_rows[subject])
        plan += [(int(subject), order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
    return plan


def epoch_cosine(lr: float, epochs: int, steps_per_epoch: int) -> optax.Schedule:
    """lr (1 + cos(pi e / E)) / 2 held for every step of epoch e."""
    def schedule(count):
        epoch = jnp.floor_divide(count, steps_per_epoch)
        return lr * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch / epochs))
    return schedule


_TRAINERS: dict = {}


def _make_trainer(cfg, train, shape, n_targets, seed, steps_per_epoch, mesh) -> tuple[step.Trainer, int]:
    model = probes.build(cfg, shape, list(n_targets), seed)
    schedule = epoch_cosine(train.lr, train.epochs, steps_per_epoch)
    tx = optax.chain(optax.clip_by_global_norm(train.clip_norm), optax.adamw(schedule, weight_decay=train.weight_decay))
    trainer = step.Trainer(model, tx, _mse, mesh, compute_dtype=train.compute_dtype, seed=seed, schedule=schedule)
    trainer.seed = seed  # the step compiles on first use; another seed's state runs through the same step
    return trainer, probes.parameter_count(model)


def _mse(model, batch, frozen):
    prediction = model(batch["tokens"], frozen["subject"]).astype(jnp.float32)
    mask = batch["row_mask"][:, None] * frozen["target_mask"][None, :]
    loss = jnp.sum(mask * (prediction - batch["targets"]) ** 2) / jnp.maximum(jnp.sum(mask), 1.0)
    return loss, {}


def _host_tokens(tokens) -> np.ndarray:
    """Tokens as sent to the device: float16 stays float16 (half the transfer), anything else float32."""
    tokens = np.asarray(tokens)
    return tokens if tokens.dtype == np.float16 else tokens.astype(np.float32)


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    pad = size - len(array)
    return np.pad(array, [(0, pad)] + [(0, 0)] * (array.ndim - 1)) if pad else array


class SystemTrainer:
    """A readout system over subjects, trained by :class:`jaxbrain.train.step.Trainer` on a shared token array."""

    def __init__(self, cfg: probes.ProbeConfig, train: TrainConfig, tokens: np.ndarray,
                 subjects: Sequence[SubjectData], seed: int):
        self.cfg, self.train, self.tokens, self.subjects, self.seed = cfg, train, tokens, list(subjects), seed
        self.n_max = max(s.n_targets for s in subjects)
        devices = jax.local_devices()[: train.devices or None]
        self.mesh = mesh_lib.make_mesh(1, devices)
        self.batch = -(-train.batch_size // len(devices)) * len(devices)
        self.steps_per_epoch = sum(math.ceil(len(s.train_rows) / train.batch_size) for s in subjects)
        shape, n_targets = probes.token_shape(tokens.shape[1:]), tuple(s.n_targets for s in subjects)
        key = (cfg, train, shape, n_targets, self.steps_per_epoch, tuple(devices))
        if key not in _TRAINERS:  # one compiled step for every system of this shape (SS subjects, seeds)
            _TRAINERS.clear()
            _TRAINERS[key] = _make_trainer(cfg, train, shape, n_targets, seed, self.steps_per_epoch, self.mesh)
        self.trainer, self.parameters = _TRAINERS[key]
        self.initial_state = (self.trainer.initial_state if self.trainer.seed == seed else
                              _make_trainer(cfg, train, shape, n_targets, seed, self.steps_per_epoch,
                                            self.mesh)[0].initial_state)

    def _frozen(self, subject: int) -> dict:
        mask = np.zeros(self.n_max, np.float32)
        mask[: self.subjects[subject].n_targets] = 1.0
        return {"subject": jnp.int32(subject), "target_mask": jnp.asarray(mask)}

    def _batch(self, subject: int, index: np.ndarray) -> dict:
        data = self.subjects[subject]
        targets = np.zeros((len(index), self.n_max), np.float32)
        targets[:, : data.n_targets] = data.y_train[index]
        local = {"tokens": _padded(_host_tokens(self.tokens[data.train_rows[index]]), self.batch),
                 "targets": _padded(targets, self.batch),
                 "row_mask": _padded(np.ones(len(index), np.float32), self.batch)}
        return mesh_lib.global_batch(local, self.mesh)

    def fit(self, checkpoint_dir=None, settings: dict | None = None, on_epoch=None):
        """Trains every epoch not yet checkpointed; returns the final state and the last epoch's mean loss."""
        initial = jax.tree.map(jnp.array, self.initial_state)  # a copy: the step donates its input
        state, done, manager = mesh_lib.place(initial, self.trainer.shardings), 0, None
        if checkpoint_dir is not None:
            manager = checkpoint.Checkpointer(checkpoint_dir, settings or {}, keep=1, async_save=False)
            restored, saved = manager.restore(self.trainer.abstract_state(), {})
            state, done = (restored, saved) if restored is not None else (state, 0)
        loss = float("nan")
        for epoch in range(done, self.train.epochs):
            losses = []
            for subject, index in epoch_plan([len(s.train_rows) for s in self.subjects], self.train.batch_size,
                                             self.seed, epoch):
                state, metrics = self.trainer.step(state, self._batch(subject, index), self._frozen(subject))
                losses.append(metrics["loss"])
            loss = float(np.mean(jax.device_get(losses)))
            if manager is not None:
                manager.save(epoch + 1, state, {}, force=True)
                manager.wait()
            if on_epoch is not None:
                on_epoch(epoch, loss)
        if manager is not None:
            manager.close()
        return state, loss

    def predict(self, state, subject: int, rows: np.ndarray) -> np.ndarray:
        """(len(rows), N_subject) float32 predictions of the model in ``state`` (dropout off)."""
        model = self.trainer.model(jax.device_get(state))
        model.eval()
        out = []
        for i in range(0, len(rows), self.batch):
            chunk = _host_tokens(self.tokens[rows[i:i + self.batch]])
            out.append(np.asarray(_forward(model, jnp.asarray(_padded(chunk, self.batch)), subject))[: len(chunk)])
        return np.concatenate(out)[:, : self.subjects[subject].n_targets].astype(np.float32)


@nnx.jit
def _forward(model, tokens, subject):
    return model(tokens, subject).astype(jnp.float32)


def pearson_per_target(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson r of each column (NaN where either side is constant)."""
    a = np.asarray(y_true, np.float64) - np.mean(y_true, axis=0)
    b = np.asarray(y_pred, np.float64) - np.mean(y_pred, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def test_scores(system: SystemTrainer, state) -> list[dict]:
    """Per subject: mean r and noise-normalised r_NC over the targets on the test split."""
    out = []
    for index, data in enumerate(system.subjects):
        r = pearson_per_target(data.y_test, system.predict(state, index, data.test_rows))
        out.append({"r": float(np.nanmean(r)), "r_nc": float(np.nanmean(scoring.normalise(r, data.ceiling))),
                    "n_targets": data.n_targets})
    return out
