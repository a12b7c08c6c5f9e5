"""Outer CV, normalisation and layer commitment, against scikit-learn / scipy references."""

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold

from jaxbrain import metrics, scoring


@pytest.mark.parametrize("n", [10, 23, 101])
def test_kfold_matches_sklearn_unshuffled(n):
    ours = scoring.kfold(n, 5)
    theirs = list(KFold(5).split(np.zeros(n)))
    assert len(ours) == 5
    for (tr, te), (tr_ref, te_ref) in zip(ours, theirs):
        np.testing.assert_array_equal(tr, tr_ref)
        np.testing.assert_array_equal(te, te_ref)


def test_kfold_shuffled_is_a_partition():
    folds = scoring.kfold(37, 5, shuffle=True, seed=3)
    held = np.concatenate([te for _, te in folds])
    assert sorted(held.tolist()) == list(range(37))
    for tr, te in folds:
        assert not set(tr) & set(te) and len(tr) + len(te) == 37
    assert not np.array_equal(held, np.arange(37))


def test_kfold_rejects_too_few_stimuli():
    with pytest.raises(ValueError, match="folds"):
        scoring.kfold(3, 5)


def test_normalise_is_the_reference_formula():
    r = np.array([0.5, -0.2, 0.9])
    nc = np.array([50.0, 10.0, 100.0])
    expected = r / np.sqrt(nc / 100 + 1e-6)
    np.testing.assert_allclose(scoring.normalise(r, nc), expected, rtol=1e-12)


def test_kept_targets_by_modality():
    nc = np.array([0.5, 1.0, 1.5, 9.9, 10.0, np.nan])
    np.testing.assert_array_equal(metrics.scored_target_mask(nc, "ceiling_root"),
                                  [False, False, True, True, True, False])
    np.testing.assert_array_equal(metrics.scored_target_mask(nc, "noise_ceiling"),
                                  [False, False, False, False, True, False])


def test_commit_layer_uses_cross_subject_mean():
    cv = {"a": {"s1": 0.9, "s2": 0.1}, "b": {"s1": 0.6, "s2": 0.5}, "c": {"s1": 0.2, "s2": 0.2}}
    assert scoring.commit_layer(cv, ["a", "b", "c"]) == "b"
    with pytest.raises(ValueError, match="non-finite"):
        scoring.commit_layer({"a": {"s1": np.nan}}, ["a"])


@pytest.mark.parametrize("gram", [False, True])
def test_score_layer_matches_sklearn_pipeline(gram):
    rng = np.random.default_rng(0)
    n_train, n_test, d, t = 60, 20, 30, 5
    x = rng.standard_normal((n_train + n_test, d))
    y = x @ rng.standard_normal((d, t)) + 3 * rng.standard_normal((n_train + n_test, t))
    nc = rng.uniform(20, 90, t)
    alphas = np.logspace(1, 7, 10)
    folds = scoring.kfold(n_train, 5)
    data = x @ x.T if gram else x
    score = scoring.score_layer(data, {"roi": (y[:n_train], y[n_train:], nc)}, gram=gram, folds=folds,
                                alphas=alphas)["roi"]

    def reference(train_x, train_y, test_x, test_y):
        model = RidgeCV(alphas=alphas).fit(train_x, train_y)
        r = np.array([stats.pearsonr(test_y[:, j], model.predict(test_x)[:, j])[0] for j in range(t)])
        return r, model.alpha_

    for k, (tr, te) in enumerate(KFold(5).split(np.zeros(n_train))):
        r, alpha = reference(x[tr], y[tr], x[te], y[te])
        assert score.cv_alpha[k] == pytest.approx(alpha)
        assert score.cv_r_nc[k] == pytest.approx(np.mean(r / np.sqrt(nc / 100 + 1e-6)), abs=1e-3)
    r, alpha = reference(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
    np.testing.assert_allclose(score.test_r, r, atol=1e-3)
    assert score.test_alpha == pytest.approx(alpha)


@pytest.mark.parametrize("alpha_per_target", [False, True])
def test_target_padding_changes_nothing(alpha_per_target):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 20))
    y = x @ rng.standard_normal((20, 3)) + rng.standard_normal((50, 3))
    folds = scoring.kfold(40, 5)
    score = scoring.score_layer(x, {"roi": (y[:40], y[40:], np.full(3, 50.0))}, gram=False, folds=folds,
                                alphas=np.logspace(-2, 4, 7), alpha_per_target=alpha_per_target)["roi"]
    model = RidgeCV(alphas=np.logspace(-2, 4, 7), alpha_per_target=alpha_per_target).fit(x[:40], y[:40])
    r = [stats.pearsonr(y[40:, j], model.predict(x[40:])[:, j])[0] for j in range(3)]
    np.testing.assert_allclose(score.test_r, r, atol=1e-4)
    assert score.test_alpha == pytest.approx(float(np.median(model.alpha_)))


def test_rois_scored_together_equal_rois_scored_alone():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((60, 25))
    rois = {name: (y[:50], y[50:], rng.uniform(30, 90, y.shape[1]))
            for name, y in (("V1", x @ rng.standard_normal((25, 4)) + 0.3 * rng.standard_normal((60, 4))),
                            ("IT", 0.1 * x @ rng.standard_normal((25, 70)) + rng.standard_normal((60, 70))))}
    folds = scoring.kfold(50, 5)
    together = scoring.score_layer(x, rois, gram=False, folds=folds, alphas=np.logspace(-2, 4, 7))
    for name, targets in rois.items():
        alone = scoring.score_layer(x, {name: targets}, gram=False, folds=folds, alphas=np.logspace(-2, 4, 7))[name]
        np.testing.assert_allclose(together[name].test_r, alone.test_r, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(together[name].cv_alpha, alone.cv_alpha)
    assert together["V1"].test_alpha != together["IT"].test_alpha
