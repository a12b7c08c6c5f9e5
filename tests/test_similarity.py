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
