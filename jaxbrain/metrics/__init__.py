"""Metrics: Pearson r, noise ceilings, and representational similarity (RDMs, RSA, CKA).

Everything public from the submodules is re-exported, so ``from jaxbrain import metrics;
metrics.pearson_r(...)`` works.
"""

from jaxbrain.metrics.ceiling import (
    ncsnr_from_trials,
    ncsnr_to_ceiling,
    noise_ceiling,
    reliable,
    scored_target_mask,
    split_half_reliability,
)
from jaxbrain.metrics.correlation import pearson_r
from jaxbrain.metrics.similarity import (
    cka,
    cka_gram,
    compare_rdms,
    off_diagonal,
    rdm,
    rdm_benchmark_score,
    rdm_ceiling,
    rdm_scores,
    rsa,
    rsm,
    similarity_scores,
    spearman,
    upper_triangle,
)

__all__ = [
    "cka",
    "cka_gram",
    "compare_rdms",
    "ncsnr_from_trials",
    "ncsnr_to_ceiling",
    "noise_ceiling",
    "off_diagonal",
    "pearson_r",
    "rdm",
    "rdm_benchmark_score",
    "rdm_ceiling",
    "rdm_scores",
    "reliable",
    "rsa",
    "rsm",
    "scored_target_mask",
    "similarity_scores",
    "spearman",
    "split_half_reliability",
    "upper_triangle",
]
