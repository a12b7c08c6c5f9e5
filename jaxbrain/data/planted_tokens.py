"""A planted token benchmark: responses that are a known attention pattern over tokens, shared by subjects.

Each stimulus is a set of T random tokens x_t in R^C (Gaussian, seeded). A shared trunk of k latent features
attends over the tokens by content: z_j = sum_t softmax_t(sharpness * x_t . q_j) (x_t . u_j), with unit query
and value directions q_j, u_j. A sharp softmax makes each latent read the one token that best matches its
query, which the token mean hides (ridge on mean-pooled tokens recovers little) and an attention readout can
learn. Every subject mixes the same latents with its own random matrix (N_s targets), so a readout trained on
all subjects learns the trunk from more data. Trials add Gaussian noise; the noise ceilings come from the
trials as for any benchmark (jaxbrain.data.neural.from_trials).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from jaxbrain import features, results
from jaxbrain.data import neural


@dataclasses.dataclass(frozen=True)
class TokenPlant:
    n_stimuli: int = 600
    n_test: int = 100
    n_tokens: int = 8
    n_channels: int = 16
    n_latents: int = 4
    n_subjects: int = 3
    n_targets: int = 12
    sharpness: float = 6.0
    noise_sd: float = 0.3
    n_repeats: int = 4
    seed: int = 0


def latents(tokens: np.ndarray, queries: np.ndarray, values: np.ndarray, sharpness: float) -> np.ndarray:
    """(n, k): each latent's value direction read through its content-based attention over the tokens."""
    logits = sharpness * np.einsum("ntc,kc->nkt", tokens, queries)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("nkt,ntc,kc->nk", weights, tokens, values)


def _unit_rows(rng, k, c):
    v = rng.standard_normal((k, c))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def stimulus_ids(n: int) -> list[str]:
    """The ids of the planted stimuli; token row i belongs to id i."""
    return [f"tok{i:05d}" for i in range(n)]


def generate(plant: TokenPlant) -> tuple[neural.NeuralDataset, np.ndarray]:
    """The dataset (ROI "planted", subjects s0..) and the (n_stimuli, T, C) float32 tokens in stimulus-id order."""
    if plant.n_test >= plant.n_stimuli or plant.n_repeats < 2:
        raise ValueError(f"planted tokens: need n_test < n_stimuli and n_repeats >= 2, got {plant}")
    rng = np.random.default_rng(plant.seed)
    tokens = rng.standard_normal((plant.n_stimuli, plant.n_tokens, plant.n_channels)).astype(np.float32)
    queries, values = (_unit_rows(rng, plant.n_latents, plant.n_channels) for _ in range(2))
    z = latents(tokens.astype(np.float64), queries, values, plant.sharpness)
    z = (z - z.mean(0)) / z.std(0)
    ids = stimulus_ids(plant.n_stimuli)
    split = ["test" if i >= plant.n_stimuli - plant.n_test else "train" for i in range(plant.n_stimuli)]
    trials = {}
    for s in range(plant.n_subjects):
        signal = z @ rng.standard_normal((plant.n_latents, plant.n_targets))
        signal = (signal - signal.mean(0)) / signal.std(0)
        noise = plant.noise_sd * rng.standard_normal((plant.n_stimuli, plant.n_targets, plant.n_repeats))
        trials[(f"s{s}", "planted")] = np.transpose(signal[:, :, None] + noise, (1, 0, 2))
    dataset = neural.from_trials("planted_tokens", "ephys", trials, ids, split)
    return dataset, tokens


def load(plant: TokenPlant, data_dir) -> tuple[neural.NeuralDataset, np.ndarray]:
    """The planted token benchmark of ``plant``, generated once into ``data_dir`` (h5 + tokens .npy)."""
    data_dir = pathlib.Path(data_dir)
    stem = data_dir / f"planted_tokens_{plant.seed}"
    h5, npy, meta = stem.with_suffix(".h5"), stem.with_suffix(".npy"), stem.with_suffix(".json")
    settings = dataclasses.asdict(plant)
    if h5.is_file() and npy.is_file() and meta.is_file():
        if json.loads(meta.read_text()) != settings:
            raise ValueError(f"{h5} was generated with other planted-token settings; use another workdir")
        return neural.load(h5), np.load(npy)
    dataset, tokens = generate(plant)
    data_dir.mkdir(parents=True, exist_ok=True)
    neural.save(dataset, h5)
    features.save_npy(npy, tokens)
    results.write_json(meta, settings)
    return neural.load(h5), tokens
