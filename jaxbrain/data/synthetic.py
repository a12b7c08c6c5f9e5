"""Planted benchmarks: neural datasets whose true layer and true noise ceiling are known.

Each ROI's noiseless response is a known linear map of one known layer of a known network applied to generated
images: the layer's features are centred, projected on their top principal directions and mixed by a random
matrix, so the signal lies where ridge regression can recover it. Trials add Gaussian noise of known variance per
target, so the true noise ceiling of the averaged responses is known in closed form:
NC% = 100 * var(signal) / (var(signal) + noise_var / n_repeats), with 1 / n_repeats averaged over stimuli when
repeats vary. Scoring the generating network must then commit each ROI to its planted layer, estimate the
ceiling within sampling error and reach a noise-normalised r near 1.

Three modalities are provided, shaped like the paper's benchmarks: a few-ROI electrophysiology set with variable
repeats, an fMRI set with many ROIs and voxels and subject-specific train stimuli, and an EEG set whose targets
are channel x time with latency-dependent signal.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from jaxbrain.data import neural
from jaxbrain.data.stimulus_set import StimulusSet


@dataclasses.dataclass
class PlantedBenchmark:
    """A generated NeuralDataset with the ground truth it was generated from."""

    dataset: neural.NeuralDataset
    true_layer: dict[str, str]                    # roi -> planted layer
    true_ceiling: dict[tuple[str, str], np.ndarray]  # (subject, roi) -> NC% per target (flattened for EEG)

    def truth(self) -> dict:
        return {"true_layer": dict(self.true_layer),
                "true_ceiling": {f"{s}/{r}": v.tolist() for (s, r), v in self.true_ceiling.items()}}


def generated_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 images: coloured oriented gratings plus Gaussian blobs, all parameters random."""
    rng = np.random.default_rng(seed)
    grid = (np.arange(size) - size / 2) / size
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    images = np.zeros((n, size, size, 3))
    for _ in range(3):
        theta = rng.uniform(0, np.pi, (n, 1, 1))
        freq = rng.uniform(1, 8, (n, 1, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        wave = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
        images += wave[..., None] * rng.uniform(-1, 1, (n, 1, 1, 3))
    for _ in range(2):
        centre = rng.uniform(-0.4, 0.4, (n, 2, 1, 1))
        width = rng.uniform(0.05, 0.25, (n, 1, 1))
        blob = np.exp(-((xx - centre[:, 0]) ** 2 + (yy - centre[:, 1]) ** 2) / (2 * width**2))
        images += 2 * blob[..., None] * rng.uniform(-1, 1, (n, 1, 1, 3))
    lo = images.min(axis=(1, 2, 3), keepdims=True)
    hi = images.max(axis=(1, 2, 3), keepdims=True)
    return np.round(255 * (images - lo) / (hi - lo)).astype(np.uint8)


def principal_scores(features: np.ndarray, n_components: int) -> np.ndarray:
    """(N, k) scores of the centred features on their top k principal directions, from the N x N Gram matrix."""
    centred = features.astype(np.float64) - features.mean(axis=0, dtype=np.float64)
    eigvals, eigvecs = np.linalg.eigh(centred @ centred.T)
    top = np.argsort(eigvals)[::-1][:n_components]
    return eigvecs[:, top] * np.sqrt(np.clip(eigvals[top], 0, None))


def mixed_signal(scores: np.ndarray, n_targets: int, rng: np.random.Generator) -> np.ndarray:
    """(N, n_targets) random mixtures of the principal scores, each centred to unit variance."""
    signal = scores @ rng.standard_normal((scores.shape[1], n_targets))
    signal -= signal.mean(axis=0)
    return signal / signal.std(axis=0)


def noisy_trials(signal: np.ndarray, noise_sd: np.ndarray, repeats: np.ndarray, max_repeats: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Trials (targets, stimuli, max_repeats): signal plus N(0, noise_sd^2), NaN beyond each stimulus' repeats."""
    n_stim, n_targets = signal.shape
    noise = rng.standard_normal((n_targets, n_stim, max_repeats)) * noise_sd[:, None, None]
    trials = signal.T[:, :, None] + noise
    trials[:, np.arange(max_repeats)[None, :] >= repeats[:, None]] = np.nan
    return trials


def true_ceiling(noise_sd: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """NC% of the repeat-averaged responses of unit-variance signals with per-target noise sd."""
    noise_of_mean = noise_sd**2 * np.mean(1.0 / repeats)
    return 100.0 / (1.0 + noise_of_mean)


@dataclasses.dataclass(frozen=True)
class PlantSpec:
    """How one benchmark is generated."""

    name: str
    modality: str
    subjects: tuple[str, ...]
    roi_layers: Mapping[str, str]      # roi -> planted layer
    n_targets: int                     # units/voxels per ROI, or channels per ROI for EEG
    n_train: int                       # train stimuli per subject
    n_test: int                        # shared test stimuli
    repeats: tuple[int, int]           # (min, max) repeats per stimulus
    noise_sd: tuple[float, float]      # range of per-target noise sd (signal sd is 1)
    subject_specific_train: bool = False
    n_times: int = 0                   # > 0: channel x time targets
    n_components: int = 8


def _layer_signal(scores: np.ndarray, spec: PlantSpec, rng: np.random.Generator) -> np.ndarray:
    if not spec.n_times:
        return mixed_signal(scores, spec.n_targets, rng)
    # channel x time: each latent component has a latency profile and a channel topography
    latent = mixed_signal(scores, spec.n_components, rng)
    t = np.arange(spec.n_times)
    latency = rng.uniform(0.2, 0.8, spec.n_components) * spec.n_times
    profile = np.exp(-((t[None, :] - latency[:, None]) ** 2) / (2 * (spec.n_times / 6) ** 2))
    topography = rng.standard_normal((spec.n_components, spec.n_targets))
    signal = np.einsum("sk,kc,kt->sct", latent, topography, profile).reshape(len(latent), -1)
    scale = signal.std(axis=0)
    return (signal - signal.mean(axis=0)) / np.where(scale > 0, scale, 1.0)


def plant(spec: PlantSpec, layer_features: Mapping[str, np.ndarray], images: np.ndarray, seed: int = 0
          ) -> PlantedBenchmark:
    """Generates trials for every (subject, ROI) from the features of the planted layers over `images`.

    `layer_features[layer]` is (n_images, D) for the images in order; `images` (n_images, H, W, 3) uint8 where
    n_images = n_test + n_train * (n_subjects if subject_specific_train else 1).
    """
    rng = np.random.default_rng(seed)
    n_images = len(images)
    ids = np.array([f"{spec.name}_{i:05d}" for i in range(n_images)])
    test_pos = np.arange(spec.n_test)
    n_train_sets = len(spec.subjects) if spec.subject_specific_train else 1
    if n_images != spec.n_test + spec.n_train * n_train_sets:
        raise ValueError(f"{spec.name}: {n_images} images do not match the planted split sizes")
    target_shape = (spec.n_targets, spec.n_times) if spec.n_times else (spec.n_targets,)
    trials, ceilings, subject_ids, scores = {}, {}, {}, {}
    for s_index, subject in enumerate(spec.subjects):
        block = s_index if spec.subject_specific_train else 0
        positions = np.concatenate([spec.n_test + block * spec.n_train + np.arange(spec.n_train), test_pos])
        subject_ids[subject] = list(ids[positions])
        repeats = rng.integers(spec.repeats[0], spec.repeats[1] + 1, len(positions))
        for roi, layer in spec.roi_layers.items():
            if (block, layer) not in scores:
                scores[(block, layer)] = principal_scores(layer_features[layer][positions], spec.n_components)
            signal = _layer_signal(scores[(block, layer)], spec, rng)
            noise_sd = rng.uniform(*spec.noise_sd, signal.shape[1])
            subject_trials = noisy_trials(signal, noise_sd, repeats, spec.repeats[1], rng)
            trials[(subject, roi)] = subject_trials.reshape(*target_shape, *subject_trials.shape[1:])
            ceilings[(subject, roi)] = true_ceiling(noise_sd, repeats)
    split_of = {stimulus_id: "test" if i < spec.n_test else "train" for i, stimulus_id in enumerate(ids)}
    dataset = neural.from_trials(spec.name, spec.modality, trials, subject_ids, split_of,
                                 stimuli=StimulusSet.from_array(images, list(ids)), source=f"planted:{spec.name}")
    return PlantedBenchmark(dataset, dict(spec.roi_layers), ceilings)


def default_specs(scale: float = 1.0) -> list[PlantSpec]:
    """The three planted benchmarks of the quickstart; `scale` multiplies stimulus and target counts."""

    def n(x: int) -> int:
        return max(10, int(round(x * scale)))

    return [
        PlantSpec("planted_ephys", "ephys", ("monkey_a", "monkey_b"),
                  {"V1": "conv1", "V4": "conv3", "IT": "conv4"}, n_targets=n(40), n_train=n(400), n_test=n(100),
                  repeats=(4, 8), noise_sd=(1.0, 3.0)),
        PlantSpec("planted_fmri", "fmri", ("subj01", "subj02", "subj03"),
                  {"V1": "conv1", "V2": "conv2", "V4": "conv3", "LO": "conv4", "PPA": "conv3", "FFA": "conv4"},
                  n_targets=n(120), n_train=n(300), n_test=n(100), repeats=(3, 3), noise_sd=(0.8, 2.0),
                  subject_specific_train=True),
        PlantSpec("planted_eeg", "eeg", ("sub-01", "sub-02"),
                  {"O": "conv2", "P": "conv3", "T": "conv4"}, n_targets=6, n_train=n(400), n_test=n(100),
                  repeats=(4, 4), noise_sd=(0.8, 2.0), n_times=12),
    ]


def images_needed(spec: PlantSpec) -> int:
    return spec.n_test + spec.n_train * (len(spec.subjects) if spec.subject_specific_train else 1)


def planted_layers(specs: Sequence[PlantSpec]) -> list[str]:
    return sorted({layer for spec in specs for layer in spec.roi_layers.values()})
