"""Encoding scores: outer cross-validation per layer, layer commitment, noise-normalised test scores.

The procedure (DESIGN.md section 3, Layer commitment and Scores): for every candidate layer, 5-fold outer CV on
the train split (contiguous folds like scikit-learn's unshuffled KFold) with alpha chosen by exact leave-one-out
inside each fold; the fold score is the noise-normalised mean Pearson r on the held-out part. Per (benchmark, ROI)
the layer with the highest cross-subject mean CV score is committed for every subject, refitted on the whole train
split and scored on the test split.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from jaxbrain import metrics, ridge, uncertainty

CEILING_EPS = 1e-6  # the reference adds this under the square root
TARGET_BUCKET = 64  # targets are zero-padded to a multiple of this so ROIs of similar size share one compile


def kfold(n: int, n_splits: int = 5, shuffle: bool = False, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs; contiguous blocks sized like scikit-learn's KFold, optionally shuffled."""
    if n_splits < 2 or n < n_splits:
        raise ValueError(f"cannot make {n_splits} folds of {n} stimuli")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    sizes = np.full(n_splits, n // n_splits)
    sizes[: n % n_splits] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    folds = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        held_out = order[start:stop]
        folds.append((np.setdiff1d(order, held_out, assume_unique=True) if shuffle
                      else np.concatenate([order[:start], order[stop:]]), held_out))
    return folds


def normalise(r: np.ndarray, ceiling_percent: np.ndarray) -> np.ndarray:
    """r_NC = r / sqrt(NC / 100) with the reference's 1e-6 under the root; no clipping."""
    return np.asarray(r) / np.sqrt(np.asarray(ceiling_percent) / 100.0 + CEILING_EPS)


@dataclasses.dataclass(frozen=True)
class LayerScore:
    """Scores of one layer for one (subject, ROI): outer-CV folds and the refit on the whole train split."""

    cv_r_nc: np.ndarray      # (n_folds,) mean normalised r per held-out fold
    cv_r: np.ndarray         # (n_folds,) mean raw r per held-out fold
    cv_alpha: np.ndarray     # (n_folds,) alpha chosen in each fold (median over targets when per target)
    test_r: np.ndarray       # (n_targets,) raw r per target on the test split
    test_r_nc: np.ndarray    # (n_targets,)
    test_alpha: float
    test_bootstrap_r: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))     # (B,) mean r
    test_bootstrap_r_nc: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # (B,) mean r_NC

    @property
    def cv_score(self) -> float:
        return float(np.mean(self.cv_r_nc))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {field.name: np.asarray(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "LayerScore":
        values = {field.name: np.asarray(arrays[field.name]) for field in dataclasses.fields(cls)}
        return cls(**{**values, "test_alpha": float(values["test_alpha"])})


def pad_targets(y: np.ndarray) -> np.ndarray:
    """Zero columns up to a multiple of TARGET_BUCKET.

    Exact for alpha selection: a zero target has zero leave-one-out residual at every alpha, so it changes
    neither the shared criterion's argmin nor any other target's alpha.
    """
    extra = -y.shape[1] % TARGET_BUCKET
    return np.pad(y, ((0, 0), (0, extra))) if extra else y


def score_layer(data: np.ndarray, rois: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *, gram: bool,
                folds: Sequence[tuple[np.ndarray, np.ndarray]], alphas: Sequence[float],
                alpha_per_target: bool = False, test_counts: np.ndarray | None = None) -> dict[str, LayerScore]:
    """Outer CV on the train block and the final train -> test fit for every ROI, in one ridge call.

    `data` holds the train stimuli first, then the test stimuli: features (n_train + n_test, D) or their Gram
    matrix (n_train + n_test, n_train + n_test). `rois[roi] = (y_train, y_test, ceiling)`; each ROI gets its own
    alpha while one eigendecomposition per split serves them all. `folds` index the train block. `test_counts`
    (B, n_test) are bootstrap resamples of the test stimuli (see jaxbrain.uncertainty); each gives one replicate
    of the mean test r and r_NC.
    """
    first_train, first_test, _ = next(iter(rois.values()))
    n_train, n_test = len(first_train), len(first_test)
    if data.shape[0] != n_train + n_test:
        raise ValueError(f"features cover {data.shape[0]} stimuli, responses {n_train} train + {n_test} test")
    blocks, groups, offset = [], {}, 0
    for roi, (y_train, y_test, _) in rois.items():
        if y_train.shape[0] != n_train or y_test.shape[0] != n_test:
            raise ValueError(f"ROI {roi}: responses cover {y_train.shape[0]} train + {y_test.shape[0]} test "
                             f"stimuli, expected {n_train} + {n_test}")
        block = pad_targets(np.concatenate([y_train, y_test], axis=0))
        groups[roi] = np.arange(offset, offset + block.shape[1])
        blocks.append(block)
        offset += block.shape[1]
    final = [(np.arange(n_train), np.arange(n_train, n_train + n_test))] if n_test else []
    fits = ridge.fit_predict_splits(data, np.concatenate(blocks, axis=1), [*folds, *final], np.asarray(alphas),
                                    gram=gram, alpha_per_target=alpha_per_target,
                                    target_groups=list(groups.values()))
    scores = {}
    for roi, (y_train, y_test, ceiling) in rois.items():
        cols = groups[roi][: y_train.shape[1]]
        cv_r_nc, cv_r, cv_alpha = [], [], []
        for (_, held_out), fit in zip(folds, fits):
            r = np.asarray(metrics.pearson_r(y_train[held_out], np.asarray(fit.predictions)[:, cols]))
            cv_r.append(np.nanmean(r))
            cv_r_nc.append(np.nanmean(normalise(r, ceiling)))
            cv_alpha.append(float(np.median(fit.alpha[cols])))
        test_r, test_alpha, replicates = np.full(len(cols), np.nan), np.nan, (np.zeros(0), np.zeros(0))
        if n_test:  # without a test split: cross-validation only
            predictions = np.asarray(fits[-1].predictions)[:, cols]
            test_r = np.asarray(metrics.pearson_r(y_test, predictions), dtype=np.float64)
            test_alpha = float(np.median(fits[-1].alpha[cols]))
            if test_counts is not None and len(test_counts):
                norm = np.sqrt(np.asarray(ceiling, np.float64) / 100.0 + CEILING_EPS)
                replicates = uncertainty.bootstrap_scores(y_test, predictions, norm, test_counts)
        scores[roi] = LayerScore(np.array(cv_r_nc), np.array(cv_r), np.array(cv_alpha), test_r,
                                 normalise(test_r, ceiling), test_alpha, *replicates)
    return scores


def commit_layer(cv_scores: Mapping[str, Mapping[str, float]], layer_order: Sequence[str]) -> str:
    """The layer with the highest mean CV score over subjects; `cv_scores[layer][subject]`.

    Ties go to the earlier layer in `layer_order`.
    """
    means = [np.mean(list(cv_scores[layer].values())) for layer in layer_order]
    if not np.all(np.isfinite(means)):
        bad = [layer for layer, m in zip(layer_order, means) if not np.isfinite(m)]
        raise ValueError(f"non-finite CV scores for layers {bad}")
    return layer_order[int(np.argmax(means))]
