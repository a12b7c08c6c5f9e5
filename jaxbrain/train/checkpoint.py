"""Orbax checkpoints of a training run: state, step, RNG, data-iterator positions, settings; last k and best.

Each checkpoint ``DIR/<step>/`` holds the items

  state      the :data:`jaxbrain.train.step.TrainState` (trained and frozen parameters, batch statistics,
             optimizer state with its step count, base RNG key), saved and restored sharded (``StandardSave``)
  data_<n>   the position of every named Grain iterator (one JSON per process, Grain's Orbax handler)
  meta       JSON: the run's settings fingerprint and the shape and dtype of every state array

Orbax writes a checkpoint into a temporary directory and renames it when complete, so a run killed while saving
leaves the previous checkpoint as the latest. Retention keeps the ``keep`` most recent checkpoints plus the best
by ``best_metric`` (when given). Restoring first compares the stored settings and array shapes with the current
run's and refuses a mismatch with one line naming what differs; a checkpoint whose files are damaged or missing
is refused with one line naming its directory and the failure.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from jaxbrain.train import mesh as mesh_lib


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (damaged, incomplete, or from other settings)."""


def describe(tree) -> dict[str, list]:
    """``{path: [shape, dtype]}`` of every array leaf (what ``meta`` stores and restore compares)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {mesh_lib.path_name(path): [list(np.shape(leaf)), str(leaf.dtype)] for path, leaf in flat}


def _differences(label: str, stored: Mapping, current: Mapping, limit: int = 4) -> list[str]:
    diffs = [f"{label} {key}: checkpoint {stored.get(key, '<absent>')}, this run {current.get(key, '<absent>')}"
             for key in sorted(set(stored) | set(current), key=lambda k: (k.startswith("opt"), k))
             if stored.get(key) != current.get(key)]  # parameters named before their optimizer moments
    return diffs[:limit] + ([f"and {len(diffs) - limit} more"] if len(diffs) > limit else [])


class Checkpointer:
    """Saves and restores a run under ``directory`` (every process calls every method; Orbax picks writers)."""

    def __init__(self, directory, settings: Mapping[str, Any], *, keep: int = 2, best_metric: str | None = None,
                 best_mode: str = "max", async_save: bool = True):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        self.directory = pathlib.Path(directory).absolute()
        self.settings = json.loads(json.dumps(dict(settings), default=str))
        self.best_metric = best_metric
        keep_policies = [policies.LatestN(n=keep)]
        if best_metric:
            keep_policies.append(policies.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min",
                                                n=1, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep_policies),
            enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step() if self.best_metric else None

    def save(self, step: int, state, iterators: Mapping[str, Any], metrics: Mapping[str, float] | None = None,
             force: bool = False) -> bool:
        """Writes checkpoint ``step`` (asynchronously when enabled); ``metrics`` feed the best-checkpoint rule."""
        items = {"state": ocp.args.StandardSave(state),
                 "meta": ocp.args.JsonSave({"settings": self.settings, "arrays": describe(state)})}
        items.update({f"data_{name}": grain.checkpoint.CheckpointSave(it) for name, it in iterators.items()})
        metrics = {k: float(v) for k, v in (metrics or {}).items()} or None
        return self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)

    def _check_meta(self, step: int, target) -> None:
        where = self.directory / str(step)
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as err:  # noqa: BLE001 - Orbax raises many types for a damaged file
            raise CheckpointError(f"checkpoint {where} is damaged or incomplete: cannot read its meta item "
                                  f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
        diffs = _differences("setting", meta.get("settings", {}), self.settings)
        if diffs:
            raise CheckpointError(f"checkpoint {where} was written with other settings: " + "; ".join(diffs))
        diffs = _differences("array", meta.get("arrays", {}), describe(target))
        if diffs:
            raise CheckpointError(f"checkpoint {where} does not match this model: " + "; ".join(diffs))

    def restore(self, target, iterators: Mapping[str, Any], step: int | None = None):
        """``(state, step)`` from checkpoint ``step`` (default the latest), iterators repositioned in place;
        ``(None, None)`` when there is no checkpoint. ``target`` is the abstract state (shapes + shardings)."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None, None
        self._check_meta(step, target)
        items = {"state": ocp.args.StandardRestore(target)}
        items.update({f"data_{name}": grain.checkpoint.CheckpointRestore(it) for name, it in iterators.items()})
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as err:  # noqa: BLE001
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise CheckpointError(f"checkpoint {self.directory / str(step)} is damaged or incomplete: "
                                  f"{type(err).__name__}: {first}") from err
        return restored["state"], step

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
