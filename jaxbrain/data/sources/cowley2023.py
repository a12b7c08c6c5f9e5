"""Cowley et al. 2023 macaque V4 spike counts to natural images (one Utah-array session).

Release: https://github.com/cowleygroup/V4_compact_models (`data_V4_responses/`, GPL-3.0); data paper:
Cowley, Stan, Pillow & Smith (2023), "Compact deep neural network models of visual cortex", bioRxiv
https://doi.org/10.1101/2023.11.22.568315.

Files expected in `folder` (session 210325 by default; other sessions follow the same names):
  responses_raw_<session>.npy   float (neurons, images, repeat slots): spike counts in 100 ms bins; images had
                                a variable number of repeats and unused slots are NaN (210325: 50 neurons,
                                640 images, 10 slots, 6-10 repeats per image).
  images_<session>.zip          JPEGs `image%04d.jpg % (i + 1)` for image index i (112 x 112 RGB).

The benchmark: one subject (`monkey_PE`, the session's animal), one ROI (`V4`), modality "ephys"; responses
are the mean over the repeats each image actually had; a random 10 % of images (seed 42, there are no
categories to stratify by) form the test split.

Noise ceiling: computed from all images' trials (train and test; the noise level does not depend on the split)
by `jaxbrain.metrics.noise_ceiling` with the variance-based estimator: each (neuron, repeat slot) is z-scored
across the images that have that slot (a slot filled for fewer than 2 images, or constant, uses the neuron's
pooled mean and SD), the noise variance is the mean over images of the across-repeat variance (ddof=1) over the
6-10 repeats each image has, and the ceiling is NC% = 100 * snr / (snr + mean_i(1 / n_i)), where n_i is image
i's repeat count: the responses being scored are means over n_i repeats, so their noise variance is
noise_var / n_i, averaged over images (no repeats are discarded to equalise counts).
"""

from __future__ import annotations

import pathlib

import numpy as np

from jaxbrain.data.neural import NeuralDataError, NeuralDataset, from_trials, random_split
from jaxbrain.data.stimulus_set import StimulusSet

SUBJECT = "monkey_PE"
ROI = "V4"


def load_cowley2023(folder, test_fraction: float = 0.1, seed: int = 42, *, session: str = "210325",
                    subject: str = SUBJECT) -> NeuralDataset:
    """Reads one Cowley et al. (2023) V4 session into a validated NeuralDataset (see the module docstring)."""
    folder = pathlib.Path(folder)
    raw_path = folder / f"responses_raw_{session}.npy"
    zip_path = folder / f"images_{session}.zip"
    for p in (raw_path, zip_path):
        if not p.is_file():
            raise FileNotFoundError(f"Cowley 2023 release: expected file not found: {p}")
    try:
        trials = np.load(raw_path, allow_pickle=False)
    except ValueError as exc:
        raise NeuralDataError(f"{raw_path}: not a numeric .npy array ({exc})") from exc
    if trials.ndim != 3 or not np.issubdtype(trials.dtype, np.floating):
        raise NeuralDataError(f"{raw_path}: expected float (neurons, images, repeats), got {trials.dtype} "
                              f"{trials.shape}")
    n_images = trials.shape[1]
    members = [f"image{i + 1:04d}.jpg" for i in range(n_images)]
    ids = [f"image{i + 1:04d}" for i in range(n_images)]
    stimuli = StimulusSet.from_zip(zip_path, ids=ids, members=members)
    split_of = random_split(ids, test_fraction=test_fraction, seed=seed)
    return from_trials(f"cowley2023_{session}", "ephys", {(subject, ROI): trials}, ids, split_of,
                       stimuli=stimuli, source=str(raw_path))
