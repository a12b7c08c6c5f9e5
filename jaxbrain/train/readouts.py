"""Frozen ridge readouts of hybrid fine-tuning: one linear map per (subject, ROI) at the ROI's committed layer.

For each (subject, ROI) the readout (W, b) predicts the ROI's reliable targets from the *unprojected*, flattened
activations of the layer the score pipeline committed for that ROI (Eq. 4): ridge with an intercept, the penalty
chosen by exact leave-one-out over the grid (one alpha shared by the ROI's targets, as in scoring), fitted by
:class:`jaxbrain.ridge.RidgeCV` on the fine-tuning stimuli's features of the model before fine-tuning. The
readouts are then frozen: they are arrays beside the train state (not parameters, no gradient, no optimizer
state), stored in float32 and placed on the mesh by the same sharding rules as parameters, so a 0.4 B-entry
readout is split over the fsdp axis rather than copied to every device.

``W`` is (D, T) with D the layer's flattened size, ``b`` is (T,); the (subject, ROI) key is ``"subject/roi"``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

from jaxbrain import features, ridge


@dataclasses.dataclass(frozen=True)
class Readout:
    subject: str
    roi: str
    layer: str
    weight: np.ndarray  # (D, T) float32
    bias: np.ndarray  # (T,) float32
    alpha: float

    @property
    def key(self) -> str:
        return pair_key(self.subject, self.roi)


def pair_key(subject: str, roi: str) -> str:
    return f"{subject}/{roi}"


def layer_features(model, spec, stimuli, ids: Sequence[str], layers: Sequence[str], batch_size: int = 64
                   ) -> dict[str, np.ndarray]:
    """Unprojected flattened float32 activations (N, D) of ``layers`` for ``ids``."""
    feats = features.extract(model, spec, stimuli, list(ids), sorted(set(layers)), keep="raw",
                             batch_size=batch_size, progress=False)
    return {layer: np.asarray(value, np.float32).reshape(len(ids), -1) for layer, value in feats.items()}


def fit_readouts(feats: Mapping[str, np.ndarray], targets: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 layers: Mapping[str, str], alphas=ridge.DEFAULT_ALPHAS) -> dict[str, Readout]:
    """Ridge readouts per (subject, ROI).

    ``feats``: layer -> (N, D) features of the fine-tuning stimuli; ``targets``: "subject/roi" -> (rows, Y) with
    ``rows`` the stimuli (indices into ``feats``) the subject saw and Y (len(rows), T) their responses;
    ``layers``: "subject/roi" -> the ROI's committed layer.
    """
    out = {}
    for key, (rows, y) in targets.items():
        subject, roi = key.split("/", 1)
        layer = layers[key]
        if not np.all(np.isfinite(y)):
            raise ValueError(f"readout {key}: responses contain NaN or inf")
        fit = ridge.RidgeCV(alphas=alphas).fit(feats[layer][rows], y)
        out[key] = Readout(subject, roi, layer, np.asarray(fit.coef_, np.float32).T.copy(),
                           np.asarray(fit.intercept_, np.float32).reshape(-1), float(fit.alpha_))
    return out


def frozen_arrays(readouts: Mapping[str, Readout]) -> dict[str, dict[str, np.ndarray]]:
    """The pytree the train step receives: ``{"subject/roi": {"weight": W, "bias": b}}``."""
    return {key: {"weight": r.weight, "bias": r.bias} for key, r in readouts.items()}


def save(path, readouts: Mapping[str, Readout]) -> pathlib.Path:
    """All readouts in one ``.npz`` (written to a temporary name, then renamed)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for key, r in readouts.items():
        arrays[f"{key}|weight"], arrays[f"{key}|bias"] = r.weight, r.bias
        arrays[f"{key}|meta"] = np.array([r.layer, repr(r.alpha)])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path) -> dict[str, Readout]:
    """Readouts written by :func:`save`."""
    with np.load(path) as data:
        keys = sorted({name.split("|")[0] for name in data.files})
        out = {}
        for key in keys:
            subject, roi = key.split("/", 1)
            layer, alpha = data[f"{key}|meta"]
            out[key] = Readout(subject, roi, str(layer), data[f"{key}|weight"], data[f"{key}|bias"], float(alpha))
    return out
