"""What a user watches during training: a progress bar, per-step and per-epoch metrics, curve plots.

Per step (``train_metrics.csv`` and TensorBoard scalars ``train/<name>``): the losses the step returns, the
learning rate, the gradient norm, throughput (images per second of the step including the wait for data) and
the data-wait time (seconds spent waiting for the next batch). Per evaluation (``eval_metrics.csv``,
``eval/<name>``): whatever the evaluation returns, with the epoch and step. TensorBoard event files are written
by tensorboardX (no TensorFlow). Only process 0 writes; on resume the CSVs are cut back to the restored step
so the files read as if the run had never stopped. At the end every column is drawn against the step
(:func:`jaxbrain.plots.training_curves`).
"""

from __future__ import annotations

import csv
import pathlib
from collections.abc import Mapping

import jax
import numpy as np
import pandas as pd

from jaxbrain import plots

TRAIN_CSV = "train_metrics.csv"
EVAL_CSV = "eval_metrics.csv"


def _truncate(path: pathlib.Path, last_step: int) -> None:
    if path.is_file() and path.stat().st_size:
        frame = pd.read_csv(path)
        frame[frame["step"] <= last_step].to_csv(path, index=False)


class _CsvLog:
    """Append-only CSV whose columns are fixed by its first row."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.columns = list(pd.read_csv(path, nrows=0).columns) if path.is_file() and path.stat().st_size else None

    def write(self, row: Mapping[str, float]) -> None:
        if self.columns is None:
            self.columns = list(row)
            with self.path.open("w", newline="") as handle:
                csv.writer(handle).writerow(self.columns)
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([row.get(c, "") for c in self.columns])


class MetricLogger:
    """Progress bar + CSV + TensorBoard for one run in ``workdir`` (a no-op on processes other than 0)."""

    def __init__(self, workdir, total_steps: int, *, start_step: int = 0, progress: bool = True,
                 shown: tuple[str, ...] = ("loss",)):
        self.workdir = pathlib.Path(workdir)
        self.enabled = jax.process_index() == 0
        self.shown = shown
        self.bar = self.tb = None
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in (TRAIN_CSV, EVAL_CSV):
            _truncate(self.workdir / name, start_step)
        self.train_csv, self.eval_csv = _CsvLog(self.workdir / TRAIN_CSV), _CsvLog(self.workdir / EVAL_CSV)
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=start_step + 1)
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def _scalars(self, prefix: str, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            if np.isfinite(value):
                self.tb.add_scalar(f"{prefix}/{name}", value, step)

    def log_step(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of step ``step`` (1-based count of finished steps)."""
        if not self.enabled:
            return
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.train_csv.write(row)
        self._scalars("train", step, metrics)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix({k: f"{row[k]:.4g}" for k in self.shown if k in row}, refresh=False)

    def log_eval(self, step: int, epoch: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self.eval_csv.write({"step": step, "epoch": epoch, **{k: float(v) for k, v in metrics.items()}})
        self._scalars("eval", step, metrics)
        if self.bar is not None:
            self.bar.write(f"epoch {epoch} (step {step}): " + ", ".join(f"{k} {float(v):.4g}"
                                                                       for k, v in metrics.items()))

    def close(self) -> list[pathlib.Path]:
        """Flush, close, and draw the curves; returns the plot paths."""
        if not self.enabled:
            return []
        if self.bar is not None:
            self.bar.close()
        self.tb.close()
        paths = []
        for name, stem in ((TRAIN_CSV, "train_curves"), (EVAL_CSV, "eval_curves")):
            path = self.workdir / name
            if path.is_file() and path.stat().st_size:
                paths.append(plots.training_curves(pd.read_csv(path), self.workdir / f"{stem}.png"))
        return paths
