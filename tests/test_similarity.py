"""RDMs, RSA and unbiased CKA against float64 numpy transcriptions, rsatoolbox and the 92-images RDMs."""

import numpy as np
import pytest
import scipy.io
import scipy.spatial.distance
import scipy.stats

from jaxbrain.metrics import similarity


def numpy_cka_debiased(x, y):
    """Float64 linear CKA through U-centred Gram matrices (the debiased estimator of Kornblith et al. 2019)."""

    def u_centre(g):
        g = g.copy()
        n = len(g)
        np.fill_diagonal(g, 0.0)
        means = g.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        g -= means[:, None]
        g -= means[None, :]
        np.fill_diagonal(g, 0.0)
        return g

    gx, gy = u_centre(x @ x.T), u_centre(y @ y.T)
    return np.sum(gx * gy) / np.sqrt(np.sum(gx * gx) * np.sum(gy * gy))


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(30, 5))
    features = latent @ rng.normal(size=(5, 40)) + 0.5 * rng.normal(size=(30, 40))
    responses = latent @ rng.normal(size=(5, 12)) + 0.5 * rng.normal(size=(30, 12))
    return features, responses


def test_rdm_is_correlation_distance(arrays):
    features, _ = arrays
    expected = scipy.spatial.distance.squareform(scipy.spatial.distance.pdist(features, "correlation"))
    np.testing.assert_allclose(np.asarray(similarity.rdm(features)), expected, atol=2e-5)


def test_rsa_matches_float64_transcription(arrays):
    features, responses = arrays
    ref = scipy.stats.spearmanr(scipy.spatial.distance.pdist(features, "correlation"),
                                scipy.spatial.distance.pdist(responses, "correlation")).statistic
    assert float(similarity.rsa(features, responses)) == pytest.approx(ref, abs=1e-4)
    assert ref > 0.3   # the shared latent makes the RDMs agree


def test_cka_matches_float64_transcription_and_is_batched(arrays):
    features, responses = arrays
    ref = numpy_cka_debiased(features, responses)
    assert float(similarity.cka(features, responses)) == pytest.approx(ref, abs=1e-5)
    rng = np.random.default_rng(1)
    batch = np.stack([features, rng.normal(size=features.shape)])
    got = np.asarray(similarity.cka(batch, responses))
    assert got.shape == (2,)
    np.testing.assert_allclose(got, [ref, numpy_cka_debiased(batch[1], responses)], atol=1e-5)
    gram = np.asarray(similarity.cka_gram(features @ features.T, responses @ responses.T))
    assert float(gram) == pytest.approx(ref, abs=1e-5)


def test_cka_is_invariant_to_rotation_and_scale(arrays):
    features, responses = arrays
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(40, 40)))
    a = float(similarity.cka(features, responses))
    assert float(similarity.cka(3.0 * features @ q, responses)) == pytest.approx(a, abs=1e-5)
    assert float(similarity.cka(features, features)) == pytest.approx(1.0, abs=1e-5)


def test_spearman_averages_ties_like_scipy():
    a = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0, 0.5])
    b = np.array([2.0, 1.0, 4.0, 4.0, 3.0, 7.0, 6.0, 0.0])
    assert float(similarity.spearman(a, b)) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-6)


def test_rsa_matches_rsatoolbox(arrays):
    rsatoolbox = pytest.importorskip("rsatoolbox")
    features, responses = arrays
    rdms = [rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(m), method="correlation") for m in (features, responses)]
    ref = float(rsatoolbox.rdm.compare(rdms[0], rdms[1], method="spearman")[0, 0])
    assert float(similarity.rsa(features, responses)) == pytest.approx(ref, abs=1e-4)
    np.testing.assert_allclose(np.asarray(similarity.upper_triangle(similarity.rdm(features))),
                               rdms[0].dissimilarities[0], atol=2e-5)


def test_similarity_scores_c_and_ve(arrays):
    features, responses = arrays
    predictions = responses + 0.1 * np.random.default_rng(3).normal(size=responses.shape)
    scores = similarity.similarity_scores(features, responses, predictions)
    assert set(scores) == {"rsa_c", "cka_c", "rsa_ve", "cka_ve"}
    assert scores["rsa_ve"] > scores["rsa_c"] and scores["cka_ve"] > scores["cka_c"]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="different numbers of stimuli"):
        similarity.rsa(np.ones((5, 3)), np.ones((6, 3)))
    with pytest.raises(ValueError, match="at least 4 stimuli"):
        similarity.cka(np.ones((3, 3)), np.ones((3, 2)))


def test_human_vs_monkey_it_rdms_of_the_92_images(realdata):
    rsatoolbox = pytest.importorskip("rsatoolbox")
    mat = scipy.io.loadmat(realdata / "rsatoolbox_92images" / "Kriegeskorte_Neuron2008_supplementalData.mat")
    entries = mat["RDMs_mIT_hIT_fig1"][0]
    names = [str(e["name"][0]) for e in entries]
    monkey = entries[names.index("mIT_674neurons")]["RDM"].astype(np.float64).ravel()
    human = entries[names.index("hITvisStim_316vx")]["RDM"].astype(np.float64).ravel()
    assert monkey.shape == human.shape == (92 * 91 // 2,)
    ours = float(similarity.compare_rdms(monkey, human))
    ref_scipy = scipy.stats.spearmanr(monkey, human).statistic
    ref_rsatoolbox = float(rsatoolbox.rdm.compare(rsatoolbox.rdm.RDMs(monkey[None]), rsatoolbox.rdm.RDMs(human[None]),
                                                  method="spearman")[0, 0])
    assert ours == pytest.approx(ref_scipy, abs=1e-5)
    assert ours == pytest.approx(ref_rsatoolbox, abs=1e-5)
    assert 0.3 < ours < 0.6    # monkey and human IT share category structure (Kriegeskorte et al. 2008)
    square = scipy.spatial.distance.squareform(monkey)
    assert float(similarity.compare_rdms(square, human)) == pytest.approx(ours, abs=1e-6)


# ---- RDM benchmarks -------------------------------------------------------------------------------------------

def _planted_subjects(n=12, coefficients=(0.3, -0.5, 1.2, 0.8), seed=0):
    """Split-half-like (not symmetric) subject matrices whose off-diagonal entries are u + c_s v, with u and v
    zero-mean, orthogonal and of equal norm, so every correlation has a closed form."""
    rng = np.random.default_rng(seed)
    off = ~np.eye(n, dtype=bool)
    basis = rng.normal(size=(off.sum(), 2))
    basis -= basis.mean(axis=0)
    u, v = np.linalg.qr(basis)[0].T
    mats = np.ones((len(coefficients), n, n))
    for s, c in enumerate(coefficients):
        mats[s][off] = u + c * v
    model = np.ones((n, n))
    model[off] = u
    return mats, model, np.asarray(coefficients)


def test_rdm_ceiling_and_scores_match_closed_forms_on_planted_matrices():
    mats, model, c = _planted_subjects()
    assert not np.allclose(mats[0], mats[0].T)
    others = (c.sum() - c) / (len(c) - 1)
    expected = (1 + c * others) / np.sqrt((1 + c ** 2) * (1 + others ** 2))     # r(u + c v, u + m v)
    np.testing.assert_allclose(similarity.rdm_ceiling(mats), expected, atol=1e-12)
    np.testing.assert_allclose(similarity.rdm_scores(model, mats), 1 / np.sqrt(1 + c ** 2), atol=1e-12)
    np.testing.assert_allclose(similarity.rdm_scores(model, 1 - mats, kind="dissimilarity"), 1 / np.sqrt(1 + c ** 2),
                               atol=1e-5)
    off = ~np.eye(12, dtype=bool)
    spearman = [scipy.stats.spearmanr(model[off], m[off]).statistic for m in mats]
    np.testing.assert_allclose(similarity.rdm_scores(model, mats, correlation="spearman"), spearman, atol=1e-5)


def test_rdm_benchmark_score_of_features_matches_numpy():
    mats, _, _ = _planted_subjects(seed=1)
    features = np.random.default_rng(2).normal(size=(12, 7))
    off = ~np.eye(12, dtype=bool)
    model = np.corrcoef(features)[off]
    raw = np.mean([np.corrcoef(model, m[off])[0, 1] for m in mats])
    ceiling = np.mean([np.corrcoef(m[off], np.delete(mats, s, 0).mean(0)[off])[0, 1] for s, m in enumerate(mats)])
    got = similarity.rdm_benchmark_score(features, mats)
    assert got["raw"] == pytest.approx(raw, abs=1e-5) and got["ceiling"] == pytest.approx(ceiling, abs=1e-5)
    assert got["normalised"] == pytest.approx(np.sign(raw) * (raw / ceiling) ** 2, rel=1e-4)
    again = similarity.rdm_benchmark_score(features, mats, ceiling=got["ceiling_per_subject"])
    assert again["normalised"] == pytest.approx(got["normalised"])
    with pytest.raises(ValueError, match="at least 2 subjects"):
        similarity.rdm_ceiling(mats[:1])
    with pytest.raises(ValueError, match="kind must be one of"):
        similarity.rdm_scores(np.eye(12), mats, kind="distance")
    mats[1, 0, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN/inf off-diagonal entries \(subjects \[1\]\)"):
        similarity.rdm_ceiling(mats)


def test_rdm_benchmark_on_the_92_image_human_it_rdms_against_rsatoolbox(realdata):
    rsatoolbox = pytest.importorskip("rsatoolbox")
    from rsatoolbox.util.inference_util import pool_rdm

    from jaxbrain.data.sources.generic import load_kriegeskorte92

    rdms = load_kriegeskorte92(realdata / "rsatoolbox_92images")
    subjects = rdms.subject_matrices("hIT_subject_sessions")               # 4 subjects x 2 sessions, 92 x 92
    vectors = np.stack([rdms.condensed(k) for k in rdms.groups["hIT_subject_sessions"]])
    as_rdms = rsatoolbox.rdm.RDMs(vectors)
    leave_one_out = [rsatoolbox.rdm.compare(pool_rdm(as_rdms.subset("index", [t for t in range(8) if t != s]),
                                                     method="euclid"),   # "euclid" pools by the plain mean
                                            as_rdms[s], method="corr")[0, 0] for s in range(8)]
    np.testing.assert_allclose(similarity.rdm_ceiling(subjects), leave_one_out, atol=1e-5)
    monkey = rdms.rdms["mIT_674neurons"]
    for correlation, method in (("pearson", "corr"), ("spearman", "spearman")):
        ref = rsatoolbox.rdm.compare(rsatoolbox.rdm.RDMs(rdms.condensed("mIT_674neurons")[None]), as_rdms,
                                     method=method)[0]
        got = similarity.rdm_scores(-monkey, subjects, kind="dissimilarity", correlation=correlation)
        np.testing.assert_allclose(got, ref, atol=1e-5)
    pixels = np.stack([rdms.stimuli.load(i)[::5, ::5] for i in rdms.stimulus_ids]).reshape(92, -1).astype(float)
    model = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(pixels), method="correlation")
    ref = rsatoolbox.rdm.compare(model, as_rdms, method="spearman")[0]
    got = similarity.rdm_benchmark_score(pixels, subjects, kind="dissimilarity", correlation="spearman")
    assert got["raw"] == pytest.approx(ref.mean(), abs=1e-7)
    assert 0.05 < np.mean(leave_one_out) < 0.5        # the 92-image hIT RDMs agree modestly across subjects
