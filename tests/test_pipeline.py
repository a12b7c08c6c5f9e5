"""The pure scoring pipeline on in-memory arrays, against scikit-learn's KFold + RidgeCV written out here."""

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold

from jaxbrain import pipeline, scoring
from jaxbrain.data import neural

ALPHAS = (1e-1, 1e0, 1e1, 1e2, 1e3)
N_TRAIN, N_TEST = 60, 20


@pytest.fixture(scope="module")
def case():
    """Two subjects, two ROIs; V1 responds to layer a, IT to layer b; a third layer is noise."""
    rng = np.random.default_rng(0)
    ids = [f"s{i:03d}" for i in range(N_TRAIN + N_TEST)]
    layers = {name: rng.standard_normal((len(ids), 12)) for name in ("a", "b", "noise")}
    trials = {}
    for subject in ("m1", "m2"):
        for roi, layer in (("V1", "a"), ("IT", "b")):
            signal = layers[layer] @ rng.standard_normal((12, 5))
            trials[(subject, roi)] = (signal.T[:, :, None] + 1.5 * rng.standard_normal((5, len(ids), 4)))
    split = ["train"] * N_TRAIN + ["test"] * N_TEST
    dataset = neural.from_trials("toy", "ephys", trials, ids, split)
    return dataset, layers


def _sklearn_scores(X, dataset, subject, roi):
    """cv_score of one layer and its test r, with the reference's KFold(5) + RidgeCV(alphas) on raw arrays."""
    ceiling = dataset.ceiling(subject, roi)
    kept = ceiling >= 10
    y_train = dataset.targets("train", subject, roi)[:, kept].astype(np.float64)
    y_test = dataset.targets("test", subject, roi)[:, kept].astype(np.float64)
    norm = np.sqrt(ceiling[kept] / 100 + 1e-6)

    def r(a, b):
        a, b = a - a.mean(0), b - b.mean(0)
        return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))

    folds = []
    for tr, te in KFold(5).split(X[:N_TRAIN]):
        fit = RidgeCV(alphas=ALPHAS).fit(X[tr], y_train[tr])
        folds.append(np.mean(r(y_train[te], fit.predict(X[te])) / norm))
    final = RidgeCV(alphas=ALPHAS).fit(X[:N_TRAIN], y_train)
    return np.mean(folds), np.mean(r(y_test, final.predict(X[N_TRAIN:])))


def test_scores_match_kfold_ridgecv_and_commit_the_right_layer(case):
    dataset, layers = case
    config = pipeline.ScoringConfig(alphas=ALPHAS, similarity=False)
    scores = pipeline.score_layers(layers, dataset, config)
    assert scores.committed == {"V1": "a", "IT": "b"}
    for layer, X in layers.items():
        for subject in ("m1", "m2"):
            for roi in ("V1", "IT"):
                cv, test_r = _sklearn_scores(X, dataset, subject, roi)
                got = scores.per_layer[layer][(subject, roi)]
                np.testing.assert_allclose(got.cv_score, cv, atol=2e-4)
                np.testing.assert_allclose(np.nanmean(got.test_r), test_r, atol=2e-4)
    rows = scores.to_rows("toy_model")
    test = [r for r in rows if r["stage"] == "test" and r["subject"] == "all" and r["metric"] == "r_nc"]
    assert {r["roi"]: r["layer"] for r in test} == {"V1": "a", "IT": "b"}


def test_gram_path_equals_feature_path(case):
    dataset, layers = case
    config = pipeline.ScoringConfig(alphas=ALPHAS)
    order = pipeline.stimulus_order(dataset)
    assert order == sorted(order)
    by_features = pipeline.score_layers(layers, dataset, config)
    by_gram = pipeline.score_layers({k: X @ X.T for k, X in layers.items()}, dataset, config, gram=True)
    for layer in layers:
        for key, score in by_features.per_layer[layer].items():
            np.testing.assert_allclose(by_gram.per_layer[layer][key].cv_r_nc, score.cv_r_nc, atol=1e-4)
    assert by_gram.committed == by_features.committed
    assert set(by_features.similarity[("m1", "V1")]) == {"rsa_ve", "cka_ve", "rsa_c", "cka_c"}


def test_without_a_test_split_scores_are_cross_validated(case):
    dataset, layers = case
    train_only = neural.NeuralDataset(
        "toy_cv", "ephys", dataset.subjects, dataset.rois, ["train"], {"train": dataset.stimulus_ids["train"]},
        {k: v for k, v in dataset.responses.items() if k[0] == "train"}, dataset.noise_ceilings)
    config = pipeline.ScoringConfig(alphas=ALPHAS)
    train_layers = {k: v[:N_TRAIN] for k, v in layers.items()}
    scores = pipeline.score_layers(train_layers, train_only, config)
    rows = scores.to_rows("m")
    assert {r["stage"] for r in rows} == {"cv", pipeline.COMMITTED_CV}
    problem = pipeline.scoring_problem(train_only, config)
    assert any("no test split" in w for w in pipeline.warnings(scores, problem, config))


def test_small_test_split_and_edge_alphas_are_warned(case):
    dataset, layers = case
    config = pipeline.ScoringConfig(alphas=(1e4, 1e5), min_test_stimuli=50)
    scores = pipeline.score_layers(layers, dataset, config)
    warned = pipeline.warnings(scores, pipeline.scoring_problem(dataset, config), config)
    assert any("only 20 stimuli" in w for w in warned)
    assert any("end of the grid" in w for w in warned)
    edge = [r["alpha_at_edge"] for r in scores.to_rows("m") if r["stage"] == "refit" and r["metric"] == "r_nc"]
    assert edge and all(e is True for e in edge)


def test_layer_scores_round_trip_through_arrays(case):
    dataset, layers = case
    scores = pipeline.score_layers(layers, dataset, pipeline.ScoringConfig(alphas=ALPHAS, similarity=False))
    back = pipeline.layer_scores_from_arrays(pipeline.layer_scores_to_arrays(scores.per_layer["a"]))
    for key, score in scores.per_layer["a"].items():
        for field, value in score.to_arrays().items():
            np.testing.assert_array_equal(back[key].to_arrays()[field], value)
    assert isinstance(back[("m1", "V1")], scoring.LayerScore)
