"""Representational similarity: RDMs (correlation distance), RSA (Spearman over upper triangles), unbiased CKA,
and RDM benchmarks scored against per-subject similarity matrices.

The RDM/RSA/CKA functions are jitted and batched over leading axes (`features` (..., n, d) against `responses`
(n, t) or (..., n, t)); the RDM-benchmark functions are float64 NumPy. The score experiment's "c" variants compare features with responses and the "ve" variants compare
ridge predictions with responses: `rsa(features, responses)`, `rsa(predictions, responses)`, and likewise `cka`.

RDM benchmarks (as Brain-Score scores its RSM-based fMRI benchmarks). A subject contributes one (n, n) matrix over
the benchmark's stimuli, declared a similarity (e.g. the Pearson r between split-half response patterns, so it need
not be symmetric) or a dissimilarity. Every comparison uses all n(n-1) off-diagonal entries (`off_diagonal`); on a
symmetric matrix that counts each pair twice, which leaves Pearson and Spearman r unchanged. A dissimilarity is
negated, which only flips the sign of r, so model and subject matrices are compared as similarities.
  ceiling (`rdm_ceiling`): for each subject, Pearson r between its matrix and the mean matrix of the other subjects
      (leave one subject out); the benchmark's ceiling is the mean over subjects.
  score (`rdm_scores`): per subject, r (Pearson or Spearman) between the model's RSM (`rsm`: Pearson r between the
      stimuli's feature vectors) and the subject's matrix; the raw score is the mean over subjects and the
      normalised score (`rdm_benchmark_score`) is (raw / ceiling)^2, with the sign of raw kept.
"""

from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp


def _rdm(patterns):
    centred = patterns - patterns.mean(axis=-1, keepdims=True)
    unit = centred / jnp.linalg.norm(centred, axis=-1, keepdims=True)
    return 1.0 - unit @ unit.T


@jax.jit
def rdm(patterns):
    """Correlation-distance RDM, 1 - Pearson r between the rows (stimuli) of `patterns` (..., n, d) -> (..., n, n).

    A row with zero variance has undefined correlations and gives NaN entries.
    """
    return jnp.vectorize(_rdm, signature="(n,d)->(n,n)")(jnp.asarray(patterns))


def upper_triangle(square):
    """The entries above the diagonal of (..., n, n), row by row (the order of scipy's squareform)."""
    square = jnp.asarray(square)
    n = square.shape[-1]
    rows, cols = jnp.triu_indices(n, k=1)
    return square[..., rows, cols]


def _ranks(v):
    """Ranks 1..m of a vector with ties given their average rank (scipy.stats.rankdata "average")."""
    s = jnp.sort(v)
    left = jnp.searchsorted(s, v, side="left")
    right = jnp.searchsorted(s, v, side="right")
    return (left + right + 1) / 2.0


def _pearson(a, b):
    a = a - a.mean()
    b = b - b.mean()
    return jnp.sum(a * b) / jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b))


def _spearman(a, b):
    return _pearson(_ranks(a), _ranks(b))


@jax.jit
def spearman(a, b):
    """Spearman rank correlation (ties averaged) over the last axis, batched over leading axes."""
    return jnp.vectorize(_spearman, signature="(m),(m)->()")(jnp.asarray(a), jnp.asarray(b))


def _as_condensed(x, name: str):
    x = jnp.asarray(x)
    if x.ndim >= 2 and x.shape[-1] == x.shape[-2] and x.shape[-1] > 1:
        return upper_triangle(x)
    if x.ndim == 2 and 1 in x.shape:
        return x.reshape(-1)
    if x.ndim == 1:
        return x
    raise ValueError(f"{name}: expected a square RDM (n, n) or its condensed upper triangle (m,), got {x.shape}")


def compare_rdms(rdm_a, rdm_b):
    """Spearman correlation between two RDMs, each square (..., n, n) or condensed upper triangles (m,)."""
    a, b = _as_condensed(rdm_a, "rdm_a"), _as_condensed(rdm_b, "rdm_b")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"compare_rdms: RDMs cover different numbers of pairs ({a.shape[-1]} vs {b.shape[-1]})")
    return spearman(a, b)


def _rsa(x, y):
    return _spearman(upper_triangle(_rdm(x)), upper_triangle(_rdm(y)))


@jax.jit
def rsa(features, responses):
    """RSA score: Spearman between the correlation-distance RDMs of `features` (..., n, d) and `responses`
    (..., n, t), over the upper triangles. Rows are the same n stimuli in the same order."""
    features, responses = jnp.asarray(features), jnp.asarray(responses)
    _check_rows(features, responses)
    return jnp.vectorize(_rsa, signature="(n,d),(n,t)->()")(features, responses)


def _hsic_unbiased(k, l):
    """Unbiased HSIC U-statistic (Song et al. 2012) of two Gram matrices; diagonals are zeroed first."""
    n = k.shape[-1]
    eye = jnp.eye(n, dtype=bool)
    k = jnp.where(eye, 0.0, k)
    l = jnp.where(eye, 0.0, l)
    k1, l1 = k.sum(axis=1), l.sum(axis=1)
    trace = jnp.sum(k * l)
    return (trace + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)) / (n * (n - 3))


def _cka_gram(k, l):
    return _hsic_unbiased(k, l) / jnp.sqrt(_hsic_unbiased(k, k) * _hsic_unbiased(l, l))


def _centre_gram(k):
    """H K H: the Gram matrix of the centred features (the unbiased HSIC is unchanged by centring, but the sums
    it is built from are far better conditioned)."""
    k = k - k.mean(axis=0, keepdims=True)
    return k - k.mean(axis=1, keepdims=True)


@jax.jit
def cka_gram(gram_a, gram_b):
    """Unbiased CKA of two Gram matrices (..., n, n) over the same n stimuli (n >= 4)."""
    gram_a, gram_b = jnp.asarray(gram_a), jnp.asarray(gram_b)
    if gram_a.shape[-1] < 4:
        raise ValueError(f"cka: the unbiased estimator needs at least 4 stimuli, got {gram_a.shape[-1]}")
    centred = lambda k, l: _cka_gram(_centre_gram(k), _centre_gram(l))
    return jnp.vectorize(centred, signature="(n,n),(n,n)->()")(gram_a, gram_b)


@jax.jit
def cka(features, responses):
    """Linear CKA with the unbiased HSIC estimator between `features` (..., n, d) and `responses` (..., n, t)."""
    features, responses = jnp.asarray(features), jnp.asarray(responses)
    _check_rows(features, responses)
    if features.shape[-2] < 4:
        raise ValueError(f"cka: the unbiased estimator needs at least 4 stimuli, got {features.shape[-2]}")
    def linear(x, y):  # centred over stimuli before the products (float32 loses the signal otherwise)
        x, y = x - x.mean(axis=0), y - y.mean(axis=0)
        return _cka_gram(x @ x.T, y @ y.T)

    return jnp.vectorize(linear, signature="(n,d),(n,t)->()")(features, responses)


def _check_rows(a, b) -> None:
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"expected (stimuli, dims) arrays, got shapes {a.shape} and {b.shape}")
    if a.shape[-2] != b.shape[-2]:
        raise ValueError(f"features and responses cover different numbers of stimuli: {a.shape[-2]} vs {b.shape[-2]}")


def similarity_scores(features, responses, predictions=None) -> dict[str, float]:
    """The RSA/CKA metrics of one (layer, subject, ROI): "rsa_c", "cka_c" compare features with responses;
    "rsa_ve", "cka_ve" (when ridge `predictions` are given) compare predictions with responses."""
    out = {"rsa_c": float(rsa(features, responses)), "cka_c": float(cka(features, responses))}
    if predictions is not None:
        out["rsa_ve"] = float(rsa(predictions, responses))
        out["cka_ve"] = float(cka(predictions, responses))
    return out


# ---------------------------------------------------------------------------------------------------------------
# RDM benchmarks (float64 NumPy: a few (n, n) matrices per layer, nothing to compile)

SIMILARITY_KINDS = ("similarity", "dissimilarity")
CORRELATIONS = ("pearson", "spearman")


def off_diagonal(square) -> np.ndarray:
    """The n(n-1) entries of (..., n, n) off the diagonal, row by row."""
    square = np.asarray(square)
    return square[..., ~np.eye(square.shape[-1], dtype=bool)]


def rsm(patterns) -> np.ndarray:
    """Representational similarity matrix (n, n): Pearson r between the rows (stimuli) of `patterns` (n, d)."""
    x = np.asarray(patterns, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"rsm: expected (stimuli, dims) patterns, got shape {x.shape}")
    return np.corrcoef(x)


def _row_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching rows of a and b (..., m)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))


def _subject_vectors(matrices) -> np.ndarray:
    m = np.asarray(matrices, dtype=np.float64)
    if m.ndim != 3 or m.shape[1] != m.shape[2] or m.shape[1] < 3:
        raise ValueError(f"subject matrices must be (subjects, n, n) with n >= 3, got shape {m.shape}")
    if m.shape[0] < 2:
        raise ValueError(f"an RDM ceiling needs at least 2 subjects, got {m.shape[0]}")
    v = off_diagonal(m)
    bad = ~np.isfinite(v)
    if bad.any():
        raise ValueError(f"subject matrices have {int(bad.sum())} NaN/inf off-diagonal entries "
                         f"(subjects {np.unique(np.nonzero(bad)[0]).tolist()})")
    return v


def rdm_ceiling(subject_matrices) -> np.ndarray:
    """Per-subject ceiling (subjects,): Pearson r over the off-diagonal entries between each subject's matrix and
    the mean of the other subjects' matrices. `subject_matrices` (subjects, n, n), all of one kind."""
    v = _subject_vectors(subject_matrices)
    others = (v.sum(axis=0, keepdims=True) - v) / (v.shape[0] - 1)
    return _row_correlations(v, others)


def rdm_scores(model_rsm, subject_matrices, *, kind: str = "similarity", correlation: str = "pearson") -> np.ndarray:
    """r (subjects,) between the model's RSM (n, n) and each subject's matrix over the off-diagonal entries.

    `kind` declares the subject matrices ("similarity" or "dissimilarity", then negated); `correlation` is
    "pearson" or "spearman" (ties averaged).
    """
    if kind not in SIMILARITY_KINDS:
        raise ValueError(f"kind must be one of {SIMILARITY_KINDS}, got {kind!r}")
    if correlation not in CORRELATIONS:
        raise ValueError(f"correlation must be one of {CORRELATIONS}, got {correlation!r}")
    subjects = _subject_vectors(subject_matrices) * (1.0 if kind == "similarity" else -1.0)
    model = np.asarray(model_rsm, dtype=np.float64)
    if model.shape != (np.shape(subject_matrices)[1],) * 2:
        raise ValueError(f"model RSM {model.shape} and subject matrices {np.shape(subject_matrices)[1:]} differ "
                         "in size")
    model = off_diagonal(model)
    if correlation == "spearman":
        from scipy.stats import rankdata

        model, subjects = rankdata(model), rankdata(subjects, axis=-1)
    return _row_correlations(model[None], subjects)


def rdm_benchmark_score(features, subject_matrices, *, kind: str = "similarity", correlation: str = "pearson",
                        ceiling=None) -> dict:
    """One layer on an RDM benchmark: {"raw", "ceiling", "normalised", "per_subject", "ceiling_per_subject"}.

    `features` (n, d) of the n stimuli in the matrices' order. raw = mean over subjects of `rdm_scores`;
    ceiling = mean of `rdm_ceiling` (pass the per-subject `ceiling` to reuse it across layers);
    normalised = sign(raw) * (raw / ceiling)^2.
    """
    per_subject = rdm_scores(rsm(features), subject_matrices, kind=kind, correlation=correlation)
    ceiling = rdm_ceiling(subject_matrices) if ceiling is None else np.asarray(ceiling, dtype=np.float64)
    raw, mean_ceiling = float(per_subject.mean()), float(ceiling.mean())
    return {"raw": raw, "ceiling": mean_ceiling, "normalised": float(np.sign(raw) * (raw / mean_ceiling) ** 2),
            "per_subject": per_subject, "ceiling_per_subject": ceiling}


__all__ = ["cka", "cka_gram", "compare_rdms", "off_diagonal", "rdm", "rdm_benchmark_score", "rdm_ceiling",
           "rdm_scores", "rsa", "rsm", "similarity_scores", "spearman", "upper_triangle", "CORRELATIONS",
           "SIMILARITY_KINDS"]
