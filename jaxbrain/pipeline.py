"""Scoring of in-memory features against a NeuralDataset: per-layer CV, layer commitment, test and similarity.

Pure functions from arrays to results (no files): `score_layers` takes every candidate layer's features (or
exact Gram matrices) over the benchmark's stimuli and returns `BenchmarkScores`, whose `to_rows()` gives the
results.csv rows. The method, with the paper's sections, is in docs/method.md (Scoring): 5-fold outer CV on the
train split with alpha by exact LOO inside each fold, the layer with the best cross-subject mean CV score
committed per ROI, refitted on the train split and scored on the test split; RSA/CKA at the committed layer.
`score_model` adds feature extraction and a per-layer cache for callers that start from a model.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from jaxbrain import metrics, ridge, scoring, uncertainty
from jaxbrain.data import neural

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (subject, roi)


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """Every setting the scores depend on (besides features and data)."""

    n_splits: int = 5
    shuffle: bool = False
    seed: int = 0
    alphas: tuple[float, ...] = tuple(ridge.DEFAULT_ALPHAS.tolist())
    alpha_per_target: bool = False
    min_ceiling: float = 10.0
    similarity: bool = True
    min_test_stimuli: int = 20
    n_bootstrap: int = uncertainty.N_BOOTSTRAP

    @classmethod
    def from_config(cls, config) -> "ScoringConfig":
        """From a score experiment's ml_collections config."""
        return cls(n_splits=int(config.cv.n_splits), shuffle=bool(config.cv.shuffle), seed=int(config.seed),
                   alphas=tuple(float(a) for a in config.ridge.alphas),
                   alpha_per_target=bool(config.ridge.alpha_per_target), min_ceiling=float(config.min_ceiling),
                   similarity=bool(config.similarity),
                   min_test_stimuli=int(config.get("min_test_stimuli", cls.min_test_stimuli)),
                   n_bootstrap=int(config.get("n_bootstrap", cls.n_bootstrap)))


@dataclasses.dataclass(frozen=True)
class ScoringProblem:
    """A benchmark laid out for scoring: feature rows, per-subject blocks and the kept targets per ROI.

    `order` lists every stimulus once (the row order of the features); `blocks[subject]` are that subject's
    rows, train stimuli first, and its number of train stimuli; `targets[(subject, roi)]` = (y_train, y_test,
    ceiling) restricted to the targets that pass the ceiling threshold.
    """

    benchmark: str
    subjects: list[str]
    rois: list[str]
    order: list[str]
    blocks: dict[str, tuple[np.ndarray, int]]
    targets: dict[Key, tuple[np.ndarray, np.ndarray, np.ndarray]]

    @property
    def has_test(self) -> bool:
        return any(len(positions) > n_train for positions, n_train in self.blocks.values())


def stimulus_order(dataset: neural.NeuralDataset) -> list[str]:
    """Every stimulus of the benchmark once, in first-seen order over splits and subjects."""
    seen: dict[str, None] = {}
    for split in dataset.splits:
        for subject in dataset.subjects:
            seen.update(dict.fromkeys(map(str, dataset.ids(split, subject))))
    return list(seen)


def _ids(dataset, split, subject) -> np.ndarray:
    return dataset.ids(split, subject) if split in dataset.splits else np.zeros(0, str)


def _targets(dataset, split, subject, roi, kept, n) -> np.ndarray:
    if split not in dataset.splits:
        return np.zeros((0, n))
    return dataset.targets(split, subject, roi)[:, kept]


def scoring_problem(dataset: neural.NeuralDataset, config: ScoringConfig) -> ScoringProblem:
    """Lays `dataset` out for scoring; a dataset without a test split is scored by cross-validation only."""
    if "train" not in dataset.splits:
        raise ValueError(f"{dataset.name}: no train split (splits: {dataset.splits})")
    order = stimulus_order(dataset)
    position = {stimulus_id: i for i, stimulus_id in enumerate(order)}
    blocks, targets = {}, {}
    for subject in dataset.subjects:
        train_ids, test_ids = _ids(dataset, "train", subject), _ids(dataset, "test", subject)
        blocks[subject] = (np.array([position[str(i)] for i in (*train_ids, *test_ids)]), len(train_ids))
        for roi in dataset.rois:
            ceiling = dataset.ceiling(subject, roi)
            kept = dataset.scored_targets(subject, roi, config.min_ceiling)
            if not kept.any():
                raise ValueError(f"{dataset.name}: subject {subject}, ROI {roi}: no target passes the ceiling "
                                 "threshold")
            n = int(kept.sum())
            targets[(subject, roi)] = (_targets(dataset, "train", subject, roi, kept, n),
                                       _targets(dataset, "test", subject, roi, kept, n), ceiling[kept])
    return ScoringProblem(dataset.name, list(dataset.subjects), list(dataset.rois), order, blocks, targets)


def _subject_data(features: np.ndarray, positions: np.ndarray, gram: bool) -> np.ndarray:
    return features[np.ix_(positions, positions)] if gram else features[positions]


def score_layer(problem: ScoringProblem, features: np.ndarray, config: ScoringConfig, *, gram: bool
                ) -> dict[Key, scoring.LayerScore]:
    """Outer CV and the train -> test refit of one layer for every (subject, ROI)."""
    out = {}
    for subject, (positions, n_train) in problem.blocks.items():
        data = _subject_data(features, positions, gram)
        folds = scoring.kfold(n_train, config.n_splits, config.shuffle, config.seed)
        rois = {roi: problem.targets[(subject, roi)] for roi in problem.rois}
        counts = uncertainty.resample_counts(len(positions) - n_train, config.n_bootstrap, config.seed,
                                             problem.benchmark, subject)
        scores = scoring.score_layer(data, rois, gram=gram, folds=folds, alphas=np.asarray(config.alphas),
                                     alpha_per_target=config.alpha_per_target, test_counts=counts)
        out.update({(subject, roi): score for roi, score in scores.items()})
    return out


def commit_layers(per_layer: Mapping[str, Mapping[Key, scoring.LayerScore]], problem: ScoringProblem,
                  layers: Sequence[str]) -> dict[str, str]:
    """Per ROI the layer with the best cross-subject mean CV score (shared by all subjects)."""
    return {roi: scoring.commit_layer({layer: {s: per_layer[layer][(s, roi)].cv_score for s in problem.subjects}
                                       for layer in layers}, list(layers))
            for roi in problem.rois}


def similarity_scores(problem: ScoringProblem, committed: Mapping[str, str], features: Mapping[str, np.ndarray],
                      config: ScoringConfig, *, gram: bool) -> dict[Key, dict[str, float]]:
    """RSA and CKA on the test split at each ROI's committed layer (docs/method.md, RSA / CKA).

    "c" variants compare the layer with the responses, "ve" variants the ridge predictions with the responses.
    RSA needs the features themselves (correlation distance), so with an exact Gram only CKA is computed for "c".
    """
    out = {}
    for subject, (positions, n_train) in problem.blocks.items():
        for roi, layer in committed.items():
            y_train, y_test, _ = problem.targets[(subject, roi)]
            data = _subject_data(features[layer], positions, gram)
            final = [(np.arange(n_train), np.arange(n_train, len(positions)))]
            y_all = scoring.pad_targets(np.concatenate([y_train, y_test]))
            fit = ridge.fit_predict_splits(data, y_all, final, np.asarray(config.alphas), gram=gram,
                                           alpha_per_target=config.alpha_per_target)[0]
            predictions = np.asarray(fit.predictions)[:, : y_test.shape[1]]
            values = {"rsa_ve": metrics.rsa(predictions, y_test), "cka_ve": metrics.cka(predictions, y_test)}
            if gram:
                values["cka_c"] = metrics.cka_gram(data[n_train:, n_train:], y_test @ y_test.T)
            else:
                values["rsa_c"] = metrics.rsa(data[n_train:], y_test)
                values["cka_c"] = metrics.cka(data[n_train:], y_test)
            out[(subject, roi)] = {metric: float(value) for metric, value in values.items()}
    return out


COMMITTED_CV = "cv_committed"  # the stage of committed-layer rows of a benchmark without a test split


def _row(**kw) -> dict[str, Any]:
    base = dict(subject="all", layer="", depth=np.nan, n_targets=0, alpha=np.nan, alpha_at_edge="", ci_low=np.nan,
                ci_high=np.nan, seed=0)
    base.update(kw)
    return base


def _geometric_mean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def _at_edge(alpha, alphas) -> bool:
    """Whether a chosen alpha (or every per-target alpha) sits at the end of the grid it was chosen from."""
    values = np.atleast_1d(np.asarray(alpha, dtype=float))
    return bool(np.all(values <= min(alphas) * (1 + 1e-9)) or np.all(values >= max(alphas) * (1 - 1e-9)))


@dataclasses.dataclass
class BenchmarkScores:
    """Per-layer scores of one model on one benchmark, the committed layer per ROI and similarity scores."""

    benchmark: str
    subjects: list[str]
    rois: list[str]
    depths: dict[str, float]
    ceilings: dict[Key, np.ndarray]
    alphas: tuple[float, ...]
    has_test: bool = True
    seed: int = 0  # of the bootstrap resamples of subjects
    per_layer: dict[str, dict[Key, scoring.LayerScore]] = dataclasses.field(default_factory=dict)
    committed: dict[str, str] = dataclasses.field(default_factory=dict)
    similarity: dict[Key, dict[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.per_layer)

    def layer_rows(self, layer: str, model: str, seed: int = 0) -> list[dict]:
        """CV and refit rows of one layer, per subject and ROI."""
        rows = []
        for (subject, roi), score in self.per_layer[layer].items():
            base = dict(model=model, benchmark=self.benchmark, seed=seed, subject=subject, roi=roi, layer=layer,
                        depth=self.depths[layer], n_targets=len(self.ceilings[(subject, roi)]))
            rows += [_row(**base, stage="cv", metric="r_nc", value=score.cv_score,
                          alpha=_geometric_mean(score.cv_alpha), alpha_at_edge=_at_edge(score.cv_alpha, self.alphas)),
                     _row(**base, stage="cv", metric="r", value=float(np.mean(score.cv_r)))]
            if self.has_test:
                rows += [_row(**base, stage="refit", metric="r_nc", value=float(np.nanmean(score.test_r_nc)),
                              alpha=score.test_alpha, alpha_at_edge=_at_edge(score.test_alpha, self.alphas)),
                         _row(**base, stage="refit", metric="r", value=float(np.nanmean(score.test_r)))]
        return rows

    def _committed_values(self, score: scoring.LayerScore, ceiling: np.ndarray) -> dict[str, tuple]:
        """metric -> (value, alpha, bootstrap replicates) at the committed layer: test scores, or CV scores
        without a test split."""
        none = np.zeros(0)
        if self.has_test:
            return {"r": (float(np.nanmean(score.test_r)), np.nan, score.test_bootstrap_r),
                    "r_nc": (float(np.nanmean(score.test_r_nc)), score.test_alpha, score.test_bootstrap_r_nc),
                    "nc": (float(np.mean(ceiling)), np.nan, none)}
        return {"r": (float(np.mean(score.cv_r)), np.nan, none),
                "r_nc": (score.cv_score, _geometric_mean(score.cv_alpha), none),
                "nc": (float(np.mean(ceiling)), np.nan, none)}

    def test_rows(self, model: str, seed: int = 0) -> list[dict]:
        """Per ROI: cross-subject CV means of every layer, test scores at the committed layer, similarity."""
        common = dict(model=model, benchmark=self.benchmark, seed=seed)
        rows = []
        for roi, committed in self.committed.items():
            for layer in self.layers:
                value = np.mean([self.per_layer[layer][(s, roi)].cv_score for s in self.subjects])
                rows.append(_row(**common, roi=roi, layer=layer, depth=self.depths[layer], stage="cv",
                                 metric="r_nc", value=float(value)))
            base = dict(common, roi=roi, layer=committed, depth=self.depths[committed],
                        stage="test" if self.has_test else COMMITTED_CV)
            per_subject = {metric: ([], []) for metric in ("r", "r_nc", "nc")}
            for subject in self.subjects:
                score, ceiling = self.per_layer[committed][(subject, roi)], self.ceilings[(subject, roi)]
                for metric, (value, alpha, replicates) in self._committed_values(score, ceiling).items():
                    edge = _at_edge(alpha, self.alphas) if metric == "r_nc" else ""
                    lo, hi = uncertainty.interval(replicates)
                    rows.append(_row(**base, subject=subject, metric=metric, value=value, alpha=alpha,
                                     alpha_at_edge=edge, n_targets=len(ceiling), ci_low=lo, ci_high=hi))
                    per_subject[metric][0].append(value)
                    per_subject[metric][1].append(replicates)
            n_total = int(sum(len(self.ceilings[(s, roi)]) for s in self.subjects))
            for metric, (values, replicates) in per_subject.items():
                lo, hi = (uncertainty.interval(uncertainty.across_subjects(replicates, self.seed, self.benchmark,
                                                                           roi)) if len(replicates[0]) else
                          (np.nan, np.nan))
                rows.append(_row(**base, metric=metric, value=float(np.mean(values)), n_targets=n_total,
                                 ci_low=lo, ci_high=hi))
        for (subject, roi), values in self.similarity.items():
            layer = self.committed[roi]
            rows += [_row(**common, subject=subject, roi=roi, layer=layer, depth=self.depths[layer], stage="test",
                          metric=metric, value=value, n_targets=len(self.ceilings[(subject, roi)]))
                     for metric, value in values.items()]
        return rows

    def to_rows(self, model: str, seed: int = 0) -> list[dict]:
        """Every results.csv row of this model on this benchmark."""
        rows = [row for layer in self.layers for row in self.layer_rows(layer, model, seed)]
        return rows + self.test_rows(model, seed)


def empty_scores(problem: ScoringProblem, depths: Mapping[str, float], config: ScoringConfig) -> BenchmarkScores:
    return BenchmarkScores(problem.benchmark, problem.subjects, problem.rois, dict(depths),
                           {key: ceiling for key, (_, _, ceiling) in problem.targets.items()}, config.alphas,
                           problem.has_test, config.seed)


def warnings(scores: BenchmarkScores, problem: ScoringProblem, config: ScoringConfig) -> list[str]:
    """What a reader of these scores should be told: no or small test split, alphas at the end of the grid."""
    out = []
    if not problem.has_test:
        out.append(f"{problem.benchmark}: no test split; scores are cross-validated on the train split only "
                   f"(stage {COMMITTED_CV})")
    n_test = {s: len(p) - n for s, (p, n) in problem.blocks.items() if 0 < len(p) - n < config.min_test_stimuli}
    if n_test:
        out.append(f"{problem.benchmark}: the test split has only {min(n_test.values())} stimuli (subjects "
                   f"{', '.join(n_test)}; fewer than min_test_stimuli={config.min_test_stimuli}): its r, RSA and "
                   "CKA are noisy")
    for roi, layer in scores.committed.items():
        edge = [s for s in problem.subjects if _at_edge(scores.per_layer[layer][(s, roi)].test_alpha
                                                        if problem.has_test else
                                                        scores.per_layer[layer][(s, roi)].cv_alpha, config.alphas)]
        if edge:
            out.append(f"{problem.benchmark} / {roi} ({layer}): the chosen alpha is at the end of the grid "
                       f"[{min(config.alphas):g}, {max(config.alphas):g}] for subject(s) {', '.join(edge)}; "
                       "widen ridge.alphas")
    return out


def finish(scores: BenchmarkScores, problem: ScoringProblem, layers: Sequence[str],
           committed_features: Callable[[list[str]], Mapping[str, np.ndarray]], config: ScoringConfig, *,
           gram: bool) -> BenchmarkScores:
    """Commits a layer per ROI and adds the similarity scores at the committed layers."""
    scores.committed = commit_layers(scores.per_layer, problem, layers)
    if config.similarity and problem.has_test:
        needed = sorted(set(scores.committed.values()))
        scores.similarity = similarity_scores(problem, scores.committed, committed_features(needed), config,
                                              gram=gram)
    return scores


def score_layers(features_by_layer: Mapping[str, np.ndarray], dataset: neural.NeuralDataset,
                 config: ScoringConfig = ScoringConfig(), *, gram: bool = False,
                 depths: Mapping[str, float] | None = None) -> BenchmarkScores:
    """Scores every layer of `features_by_layer` (rows in `stimulus_order(dataset)`, or Gram matrices over those
    stimuli with `gram=True`) on `dataset`; layers are candidates in the mapping's order."""
    layers = list(features_by_layer)
    depths = dict(depths) if depths is not None else dict(zip(layers, np.linspace(0, 1, len(layers))))
    return score_model(lambda names: {n: np.asarray(features_by_layer[n]) for n in names}, dataset, layers, depths,
                       config, gram=gram)


def layer_scores_to_arrays(scores: Mapping[Key, scoring.LayerScore]) -> dict[str, np.ndarray]:
    """One layer's scores as named arrays ("subject/roi/field"), e.g. for an .npz file."""
    return {f"{s}/{r}/{field}": value for (s, r), score in scores.items() for field, value in score.to_arrays().items()}


def layer_scores_from_arrays(arrays: Mapping[str, np.ndarray]) -> dict[Key, scoring.LayerScore]:
    """The inverse of `layer_scores_to_arrays`."""
    grouped: dict[Key, dict[str, np.ndarray]] = {}
    for name, value in arrays.items():
        subject, roi, field = name.split("/")
        grouped.setdefault((subject, roi), {})[field] = value
    return {key: scoring.LayerScore.from_arrays(fields) for key, fields in grouped.items()}


class LayerCache(Protocol):
    """Where `score_model` keeps finished layers: `get(layer)` returns stored scores or None; `put(layer,
    scores)` receives the scores so far, `scores.per_layer[layer]` being the one just finished."""

    def get(self, layer: str) -> dict[Key, scoring.LayerScore] | None: ...

    def put(self, layer: str, scores: BenchmarkScores) -> None: ...


def score_model(extract: Callable[[list[str]], Mapping[str, np.ndarray]], dataset: neural.NeuralDataset,
                layers: Sequence[str], depths: Mapping[str, float], config: ScoringConfig = ScoringConfig(), *,
                gram: bool, cache: LayerCache | None = None) -> BenchmarkScores:
    """`score_layers` for a model given as `extract(layer_names) -> {layer: features}`, resumable per layer.

    Layers found in `cache` are not extracted again; each newly scored layer is put there before the next.
    """
    problem = scoring_problem(dataset, config)
    scores = empty_scores(problem, depths, config)
    stored = {layer: cache.get(layer) if cache is not None else None for layer in layers}
    todo = [layer for layer in layers if stored[layer] is None]
    features = dict(extract(todo)) if todo else {}
    for layer in layers:
        if stored[layer] is not None:
            scores.per_layer[layer] = stored[layer]
            continue
        scores.per_layer[layer] = score_layer(problem, features[layer], config, gram=gram)
        if cache is not None:
            cache.put(layer, scores)
        log.info("%s / %s scored", dataset.name, layer)

    def committed_features(names):
        missing = [name for name in names if name not in features]
        return {**features, **(dict(extract(missing)) if missing else {})}

    return finish(scores, problem, layers, committed_features, config, gram=gram)
