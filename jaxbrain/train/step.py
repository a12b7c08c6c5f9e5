"""The pure, jitted train step: state in, state and metrics out, donated, over an explicit mesh.

A :class:`Trainer` splits a model and its ``nnx.Optimizer`` once into static graph definitions and a state
pytree (:class:`TrainState`: the trained parameters, the other (frozen) parameters, the other variables such as
batch-norm statistics, the optimizer state with its step count, and the run's base RNG key). Its ``step`` is
one ``jax.jit`` of ``(state, batch, frozen) -> (state, metrics)`` with the state donated and kept in the
shardings that :mod:`jaxbrain.train.mesh` rules give it.

Mixed precision: parameters stay float32 (the master copy the optimizer updates); every submodule with a
``dtype`` attribute computes in ``compute_dtype`` (flax casts parameters and inputs at use; batch-norm statistics
are reduced in float32), the loss is taken in float32. Gradient accumulation splits the batch into
``accum_steps`` micro-batches of consecutive rows within each device's shard and averages their gradients
(exactly the full-batch gradient for losses that are means over rows and models without batch statistics).

Randomness inside the model (LoRA dropout) is reseeded every step from ``fold_in(base key, step)``, so a run
restored at step t draws the same numbers as one that never stopped.

``loss_fn(model, batch, frozen) -> (loss, {name: scalar})`` calls the model itself (``train=True``); ``frozen``
is a pytree of arrays that receive no gradient and are not donated (e.g. the ridge readouts of fine-tuning).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxbrain import sharding
from jaxbrain.train import mesh as mesh_lib

TrainState = dict  # {"params", "frozen", "stats", "opt", "rng"}: see the module docstring
STATS = nnx.Not(nnx.Any(nnx.Param, nnx.RngState))  # batch-norm statistics and other non-trained variables
LossFn = Callable[[nnx.Module, dict, Any], tuple[jax.Array, dict]]


def set_compute_dtype(model: nnx.Module, dtype: str) -> None:
    """Make every submodule with a ``dtype`` attribute compute in ``dtype`` (parameters keep theirs)."""
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "dtype") and hasattr(module, "param_dtype"):
            module.dtype = jnp.dtype(dtype)


def gathered(tree):
    """``tree`` replicated for compute (FSDP's all-gather; gradients are reduce-scattered back to the sharded
    originals)."""
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, P()), tree)


def _micro_batches(batch: dict, accum_steps: int, mesh) -> dict:
    """(B, ...) -> (accum_steps, B / accum_steps, ...), taking consecutive rows of each device's shard."""
    n_dev = mesh.devices.size

    def split(x):
        per_dev = x.shape[0] // n_dev
        if x.shape[0] % n_dev or per_dev % accum_steps:
            raise ValueError(f"batch of {x.shape[0]} rows cannot be split into {accum_steps} micro-batches "
                             f"over {n_dev} devices")
        y = x.reshape(n_dev, accum_steps, per_dev // accum_steps, *x.shape[1:])
        y = jnp.swapaxes(y, 0, 1)
        return y.reshape(accum_steps, x.shape[0] // accum_steps, *x.shape[1:])

    return jax.tree.map(split, batch)


class Trainer:
    """Static half of training (graph definitions, loss, shardings) around a pure jitted step.

    ``model`` is changed in place to compute in ``compute_dtype``; ``wrt`` selects the trained variables
    (default every ``nnx.Param``; LoRA passes its adapters and the head). ``schedule`` (optional) reports the
    learning rate of each step in the metrics.
    """

    def __init__(self, model: nnx.Module, tx: optax.GradientTransformation, loss_fn: LossFn,
                 mesh: jax.sharding.Mesh, *, wrt=nnx.Param, compute_dtype: str = "float32", accum_steps: int = 1,
                 rules: Sequence[str] = mesh_lib.DEFAULT_RULES, seed: int = 0,
                 schedule: optax.Schedule | None = None):
        if accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {accum_steps}")
        self.mesh, self.loss_fn, self.accum_steps, self.schedule = mesh, loss_fn, accum_steps, schedule
        set_compute_dtype(model, compute_dtype)
        self.filters = (wrt, nnx.Param, nnx.RngState, ...)
        optimizer = nnx.Optimizer(model, tx, wrt=wrt)
        self.model_def, params, frozen, self.rng_vars, stats = nnx.split(model, *self.filters)
        self.opt_def, opt_state = nnx.split(optimizer)
        self.has_dropout = bool(jax.tree.leaves(self.rng_vars))
        state = {"params": params, "frozen": frozen, "stats": stats, "opt": opt_state,
                 "rng": jax.random.key_data(jax.random.key(seed))}
        self.shardings = mesh_lib.tree_shardings(state, mesh, rules)
        self.initial_state = state
        self._step = jax.jit(self._train_step, donate_argnums=0,
                             out_shardings=(self.shardings, mesh_lib.replicated(mesh)))
        self._eval = jax.jit(self._eval_step, static_argnums=3, out_shardings=mesh_lib.replicated(mesh))

    # -- state ----------------------------------------------------------------------------------------------
    def init_state(self) -> TrainState:
        """The initial state placed on the mesh (identical on every process)."""
        return mesh_lib.place(self.initial_state, self.shardings)

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the state (the restore target of a checkpoint)."""
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            self.initial_state, self.shardings)

    def model(self, state: TrainState) -> nnx.Module:
        """The model with ``state``'s variables (for export, scoring and evaluation outside the step)."""
        return nnx.merge(self.model_def, state["params"], state["frozen"], self.rng_vars, state["stats"])

    def host_model(self, state: TrainState) -> nnx.Module:
        """The model with ``state``'s values gathered to this host as numpy arrays (for export)."""
        return self.model(jax.tree.map(sharding.to_host, state))

    @staticmethod
    def step_count(state: TrainState) -> int:
        return int(jax.device_get(state["opt"]["step"][...]))

    # -- step -----------------------------------------------------------------------------------------------
    def _loss(self, params, stats, frozen_params, batch, frozen, key):
        # fresh Variables at this trace level, so the model may update its statistics in place
        stats, rng_vars = jax.tree.map(lambda x: x, (stats, self.rng_vars))
        model = nnx.merge(self.model_def, gathered(params), gathered(frozen_params), rng_vars, stats)
        model.train()  # dropout on (batch statistics follow each model's own `train` argument)
        if self.has_dropout:
            nnx.reseed(model, dropout=key)
        loss, metrics = self.loss_fn(model, batch, frozen)
        new_stats = nnx.state(model, STATS)
        return loss.astype(jnp.float32), (metrics, new_stats)

    def _gradients(self, state, batch, frozen, key):
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)
        if self.accum_steps == 1:
            (loss, (metrics, stats)), grads = grad_fn(state["params"], state["stats"], state["frozen"], batch,
                                                      frozen, key)
            return loss, metrics, stats, grads

        def micro(carry, inputs):
            stats, grad_sum = carry
            index, micro_batch = inputs
            (loss, (metrics, stats)), grads = grad_fn(state["params"], stats, state["frozen"], micro_batch,
                                                      frozen, jax.random.fold_in(key, index))
            return (stats, jax.tree.map(jnp.add, grad_sum, grads)), (loss, metrics)

        zeros = jax.tree.map(jnp.zeros_like, state["params"])
        inputs = (jnp.arange(self.accum_steps), _micro_batches(batch, self.accum_steps, self.mesh))
        (stats, grad_sum), (losses, metrics) = jax.lax.scan(micro, (state["stats"], zeros), inputs)
        grads = jax.tree.map(lambda g: g / self.accum_steps, grad_sum)
        return losses.mean(), jax.tree.map(jnp.mean, metrics), stats, grads

    def _train_step(self, state: TrainState, batch: dict, frozen: Any):
        step = state["opt"]["step"][...]
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)
        loss, metrics, stats, grads = self._gradients(state, batch, frozen, key)
        model = nnx.merge(self.model_def, state["params"], state["frozen"], self.rng_vars, stats)
        optimizer = nnx.merge(self.opt_def, state["opt"])
        optimizer.update(model, grads)
        _, params, _, _, stats = nnx.split(model, *self.filters)
        new_state = dict(state, params=params, stats=stats, opt=nnx.state(optimizer))
        metrics = {"loss": loss, **metrics, "grad_norm": optax.global_norm(grads)}
        if self.schedule is not None:
            metrics["lr"] = jnp.asarray(self.schedule(step), jnp.float32)
        return new_state, metrics

    def step(self, state: TrainState, batch: dict, frozen: Any = None) -> tuple[TrainState, dict]:
        """One optimizer update on a global batch (arrays from ``mesh.global_batch``); ``state`` is donated."""
        with jax.set_mesh(self.mesh):
            return self._step(state, batch, frozen)

    # -- evaluation -----------------------------------------------------------------------------------------
    def _eval_step(self, state, batch, frozen, eval_fn):
        model = nnx.merge(self.model_def, gathered(state["params"]), gathered(state["frozen"]), self.rng_vars,
                          state["stats"])
        model.eval()
        return eval_fn(model, batch, frozen)

    def evaluate(self, state: TrainState, batch: dict, eval_fn: Callable, frozen: Any = None) -> dict:
        """``eval_fn(model, batch, frozen) -> {name: scalar}`` under jit (``eval_fn`` must be hashable)."""
        with jax.set_mesh(self.mesh):
            return self._eval(state, batch, frozen, eval_fn)
