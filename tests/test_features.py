import collections
import dataclasses
import json

import chex

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbrain import features, ridge, sharding
from jaxbrain.features import forward as features_forward
from jaxbrain.data import stimuli as stimulus_pipeline
from jaxbrain.models.registry import Preprocessing
from stimulus_fakes import FakeStimuli

PREP = Preprocessing(resize=18, crop=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class ToyNet(nnx.Module):
    """conv1_pre (before ReLU) and conv1 16x16x16 (D = 4096), conv2 8x8x8 (D = 512), tokens (64, 8), pool (8,)."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 16, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.conv2 = nnx.Conv(16, 8, (3, 3), strides=2, rngs=rngs)
        self.mix = nnx.Linear(8, 8, rngs=rngs)
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, images, train=False):
        out = {}
        x = self.conv1(images)
        out["conv1_pre"] = x
        x = jax.nn.relu(self.norm(x, use_running_average=not train))
        out["conv1"] = x
        x = jax.nn.relu(self.conv2(x))
        out["conv2"] = x
        tokens = self.mix(x.reshape(x.shape[0], -1, x.shape[-1]))
        out["tokens"] = tokens
        out["pool"] = tokens.mean(axis=1)
        logits = self.head(out["pool"])
        out["logits"] = logits
        return logits, out


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str = "toynet"
    preprocessing: Preprocessing = PREP

@pytest.fixture(scope="module")
def model():
    return ToyNet(nnx.Rngs(0))


def _stimuli(n, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return FakeStimuli({f"s{k:03d}": rng.integers(0, 256, (18, 20, 3), dtype=np.uint8) for k in range(n)}, **kw)


@pytest.fixture(scope="module")
def stim():
    return _stimuli(13)


def _direct(model, stim, ids):
    """Every layer from one plain forward on all images, float64 numpy (no pipeline, no mesh)."""
    images = np.stack([stimulus_pipeline.preprocess(stim.images[i], PREP) for i in ids])
    _, out = model(jnp.asarray(images), train=False)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


KEEP = {"conv1": "gram", "conv2": "raw", "tokens": "tokens", "pool": "pooled"}


def test_every_kind_matches_a_direct_forward(model, stim):
    ids = stim.ids[::-1]
    got = features.extract(model, Spec(), stim, ids, list(KEEP), keep=KEEP, batch_size=4, progress=False)
    ref = _direct(model, stim, ids)
    x = ref["conv1"].reshape(len(ids), -1)
    gram = x @ x.T
    assert got["conv1"].shape == (13, 13) and got["conv1"].dtype == np.float32
    np.testing.assert_allclose(got["conv1"], gram, rtol=1e-5, atol=1e-5 * np.abs(gram).max())
    np.testing.assert_allclose(got["conv2"], ref["conv2"].reshape(13, -1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["tokens"], ref["tokens"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["pool"], ref["tokens"].mean(axis=1), rtol=1e-5, atol=1e-5)


def test_results_do_not_depend_on_devices_or_batch_size(model, stim):
    keep = {**KEEP, "conv1": "gram", "conv2": "projection"}
    runs = [
        features.extract(model, Spec(), stim, stim.ids, list(keep), keep=keep, batch_size=bs, mesh=mesh,
                         projection_dim=256, progress=False)
        for mesh, bs in [(sharding.data_mesh(jax.devices()[:1]), 3), (sharding.data_mesh(), 5),
                         (sharding.data_mesh(), 16), (sharding.data_mesh(jax.devices()[:1]), 20)]
    ]
    for other in runs[1:]:
        for layer in keep:
            scale = np.abs(runs[0][layer]).max()
            np.testing.assert_allclose(other[layer], runs[0][layer], rtol=1e-5, atol=1e-6 * scale, err_msg=layer)


@pytest.mark.parametrize("kernel", ["host", "gather", "generate"])
def test_projection_equals_the_dense_float64_matrix_product(model, stim, kernel):
    got = features.extract(model, Spec(), stim, stim.ids, ["conv1", "pool"], keep="projection",
                           projection_dim=512, seed=3, progress=False, projection_kernel=kernel)
    ref = _direct(model, stim, stim.ids)
    dense = features.projection_matrix(features.sparse_projection(4096, 512, seed=3))
    expected = ref["conv1"].reshape(13, -1) @ dense
    assert got["conv1"].shape == (13, 512)
    np.testing.assert_allclose(got["conv1"], expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    # D = 8 <= 512: kept as it is
    np.testing.assert_allclose(got["pool"], ref["pool"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("in_dim,out_dim", [(4096, 1500), (1000, 3), (300, 2100)])
def test_host_matrix_is_the_column_stored_matrix(in_dim, out_dim):
    """Built in column blocks (2,048 columns each) and split into column shards, it is the same matrix."""
    dense = features.projection_matrix(features.sparse_projection(in_dim, out_dim, seed=2))
    for shards in (1, 2, 3):
        parts = features.host_projection(in_dim, out_dim, seed=2, shards=shards)
        assert len(parts) == shards and all(part.has_sorted_indices for part in parts)
        got = np.concatenate([part.toarray() for part in parts], axis=1)
        np.testing.assert_array_equal(got != 0, dense != 0)
        np.testing.assert_allclose(got, dense, rtol=1e-6)


def test_cpu_steps_run_the_model_on_padded_blocks_of_rows():
    mesh = sharding.data_mesh(jax.devices()[:1])
    cap = features_forward.CPU_MICRO_BATCH
    assert features_forward.micro_batches(cap, mesh) == (1, cap)
    assert features_forward.micro_batches(4 * cap, mesh) == (4, cap)
    assert features_forward.micro_batches(cap + 1, mesh) == (2, cap // 2 + 1)


def test_projection_matrix_has_the_reference_distribution():
    d, k = 4096, 1500
    dense = features.projection_matrix(features.sparse_projection(d, k, seed=0))
    density = 1 / np.sqrt(d)
    scale = np.sqrt(1 / density) / np.sqrt(k)
    assert set(np.unique(dense)) <= {-scale, 0.0, scale}  # a repeated row would show up as 2 * scale
    nonzero = dense != 0
    mean, sd = d * k * density, np.sqrt(d * k * density * (1 - density))
    assert abs(nonzero.sum() - mean) < 5 * sd
    positive = (dense > 0).sum()
    assert abs(positive - nonzero.sum() / 2) < 5 * np.sqrt(nonzero.sum() / 4)
    per_column = nonzero.sum(axis=0)
    assert abs(per_column.var() / (d * density * (1 - density)) - 1) < 0.15
    # Non-zeros spread evenly over the rows (geometric gaps are not truncated early)
    halves = nonzero[: d // 2].sum(), nonzero[d // 2:].sum()
    assert abs(halves[0] - halves[1]) < 5 * np.sqrt(nonzero.sum())
    same = features.projection_matrix(features.sparse_projection(d, k, seed=0))
    other = features.projection_matrix(features.sparse_projection(d, k, seed=1))
    np.testing.assert_array_equal(dense, same)
    assert (dense != other).any()
    # E[R R^T] = I: squared column norms of R^T are 1 on average
    np.testing.assert_allclose((dense ** 2).sum(axis=1).mean(), 1.0, rtol=0.02)


def _prediction_gap(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(a - a.mean(axis=0))


def test_projection_path_converges_to_the_exact_gram_path(model):
    """Ridge on projected features is kernel ridge on X R R^T X^T (exactly), which approaches kernel ridge on
    the exact Gram at the Johnson-Lindenstrauss rate 1/sqrt(k)."""
    n = 60
    stim = _stimuli(n, seed=7)
    exact = features.extract(model, Spec(), stim, stim.ids, ["conv1"], keep="gram", batch_size=16,
                             progress=False)["conv1"].astype(np.float64)
    projected = {k: features.extract(model, Spec(), stim, stim.ids, ["conv1"], keep="projection", batch_size=16,
                                     projection_dim=k, progress=False)["conv1"].astype(np.float64)
                 for k in (256, 2048)}
    # Gram: E (p_i . p_j - K_ij)^2 = (K_ii K_jj + K_ij^2) / k
    p = projected[2048]
    diag = np.diag(exact)
    expected = np.sqrt(((np.outer(diag, diag) + exact ** 2) / 2048).sum()) / np.linalg.norm(exact)
    observed = np.linalg.norm(p @ p.T - exact) / np.linalg.norm(exact)
    assert 0.3 * expected < observed < 2 * expected, (observed, expected)

    x = _direct(model, stim, stim.ids)["conv1"].reshape(n, -1)
    rng = np.random.default_rng(0)
    y = x @ rng.normal(size=(x.shape[1], 4)) / np.sqrt(x.shape[1])
    y += 0.5 * y.std() * rng.normal(size=y.shape)
    splits = [(np.arange(0, 45), np.arange(45, n)), (np.arange(15, n), np.arange(0, 15))]
    centred = exact - exact.mean(0) - exact.mean(1)[:, None] + exact.mean()
    alpha = [np.trace(centred) / n]  # a fixed, moderate penalty: the LOO choice itself may differ by a step
    reference = ridge.fit_predict_splits(exact, y, splits, alpha, gram=True)
    gaps = {}
    for k, p in projected.items():
        from_features = ridge.fit_predict_splits(p, y, splits, alpha, gram=False)
        from_kernel = ridge.fit_predict_splits(p @ p.T, y, splits, alpha, gram=True)
        for f, g in zip(from_features, from_kernel):
            assert _prediction_gap(g.predictions, f.predictions) < 1e-3
        gaps[k] = np.mean([_prediction_gap(r.predictions, f.predictions)
                           for r, f in zip(reference, from_features)])
    # 8x the dimensions: the gap shrinks by about sqrt(8) = 2.8
    assert gaps[2048] < gaps[256] / 1.8, gaps
    assert gaps[2048] < 1.0, gaps


def test_resume_after_a_crash_gives_the_uninterrupted_result(model, tmp_path):
    keep = {"conv1": "gram", "conv2": "projection", "pool": "pooled"}
    layers = list(keep)
    kw = dict(keep=keep, batch_size=2, projection_dim=256, progress=False, num_threads=1,
              mesh=sharding.data_mesh(jax.devices()[:2]))
    clean = features.extract(model, Spec(), _stimuli(14), _stimuli(14).ids, layers, **kw)
    crashing = _stimuli(14, fail_after=9)
    with pytest.raises(RuntimeError, match="simulated crash"):
        features.extract(model, Spec(), crashing, crashing.ids, layers, out_dir=tmp_path, **kw)
    record = json.loads((tmp_path / "progress.json").read_text())
    done = {entry["rows_done"] for entry in record["layers"].values()}
    assert len(done) == 1 and 0 < done.pop() < 14
    resumed_stim = _stimuli(14)
    resumed = features.extract(model, Spec(), resumed_stim, resumed_stim.ids, layers, out_dir=tmp_path, **kw)
    assert resumed_stim.loads < 14  # it did not start over
    for layer in layers:
        np.testing.assert_allclose(resumed[layer], clean[layer], rtol=1e-6, atol=1e-7, err_msg=layer)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "conv1.gram.npy", "conv1.gram.rowsums.npy", "conv2.projection.npy", "pool.pooled.npy", "progress.json"]
    # The row sums kept beside K give the correlation-distance RDM of the features
    gram = features.load_gram(tmp_path, "conv1")
    x = _direct(model, resumed_stim, resumed_stim.ids)["conv1"].reshape(14, -1)
    assert gram.dim == x.shape[1]
    np.testing.assert_allclose(gram.row_sums, x.sum(axis=1), rtol=1e-5, atol=1e-6 * np.abs(x).sum(axis=1).max())
    np.testing.assert_allclose(gram.correlation_distances(), 1 - np.corrcoef(x), atol=1e-5)
    # Everything finished: nothing is loaded again
    again = features.extract(model, Spec(), _stimuli(14, fail_after=0), resumed_stim.ids, layers,
                             out_dir=tmp_path, **kw)
    for layer in layers:
        np.testing.assert_array_equal(again[layer], resumed[layer])


def test_float16_storage_and_changed_settings(model, stim, tmp_path):
    half = features.extract(model, Spec(), stim, stim.ids, ["conv2", "tokens"], keep="raw", dtype="float16",
                            out_dir=tmp_path, progress=False)
    full = features.extract(model, Spec(), stim, stim.ids, ["conv2", "tokens"], keep="raw", progress=False)
    assert isinstance(half["conv2"], np.memmap) and half["conv2"].dtype == np.float16
    np.testing.assert_allclose(half["tokens"], full["tokens"], rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="other settings"):
        features.extract(model, Spec(), stim, stim.ids, ["conv2"], keep="raw", dtype="float32",
                         out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="another list of stimulus ids"):
        features.extract(model, Spec(), stim, stim.ids[:5], ["conv2"], keep="raw", out_dir=tmp_path,
                         progress=False)


@pytest.fixture
def trace_limits(monkeypatch):
    """Pins how often each compiled step body may be traced: ``trace_limits[name] = n`` wraps the bodies of
    steps ``name`` in ``chex.assert_max_traces(n)`` (steps not named may not be traced); the step cache starts
    empty."""
    chex.clear_trace_counter()
    monkeypatch.setattr(features_forward, "_STEPS", collections.OrderedDict())
    limits = {}
    monkeypatch.setattr(features_forward, "traced",
                        lambda name, body: chex.assert_max_traces(body, n=limits.get(name, 0)))
    return limits


def test_one_compile_per_batch_shape(model, stim, trace_limits):
    # one forward trace; the gram store is sized by the number of stimuli, so one trace per N
    trace_limits.update(forward=1, gram=2)
    kw = dict(keep={"conv1": "gram", "pool": "pooled"}, batch_size=6, progress=False,
              mesh=sharding.data_mesh(jax.devices()[:2]))
    features.extract(model, Spec(), stim, stim.ids, ["conv1", "pool"], **kw)  # 3 batches, the last padded
    features.extract(model, Spec(), stim, stim.ids[:7], ["conv1", "pool"], **kw)
    with pytest.raises(AssertionError, match="traced > 2"):  # a third N is a third gram trace
        features.extract(model, Spec(), stim, stim.ids[:5], ["conv1", "pool"], **kw)


def test_bad_requests_are_named(model, stim):
    with pytest.raises(KeyError, match="no layers \\['conv9'\\].*conv1"):
        features.extract(model, Spec(), stim, stim.ids, ["conv9"], progress=False)
    with pytest.raises(ValueError, match="unknown keep kind"):
        features.extract(model, Spec(), stim, stim.ids, ["conv1"], keep="mean", progress=False)
    with pytest.raises(ValueError, match="dtype"):
        features.extract(model, Spec(), stim, stim.ids, ["conv1"], dtype="bfloat16", progress=False)
    with pytest.raises(ValueError, match="no kind for layers \\['pool'\\]"):
        features.extract(model, Spec(), stim, stim.ids, ["conv1", "pool"], keep={"conv1": "raw"}, progress=False)
