"""Metrics: Pearson r, noise ceilings, and (in similarity.py) RDMs, RSA and CKA.

Everything public from the submodules is re-exported, so ``from jaxbrain import metrics;
metrics.pearson_r(...)`` works.
"""

import importlib

from jaxbrain.metrics.ceiling import (
    ncsnr_from_trials,
    ncsnr_to_ceiling,
    noise_ceiling,
    reliable,
    split_half_reliability,
)
from jaxbrain.metrics.correlation import pearson_r

__all__ = [
    "ncsnr_from_trials",
    "ncsnr_to_ceiling",
    "noise_ceiling",
    "pearson_r",
    "reliable",
    "split_half_reliability",
]

# Representational similarity (RDMs, RSA, CKA): similarity.py's public names are re-exported here.
try:
    _similarity = importlib.import_module("jaxbrain.metrics.similarity")
except ModuleNotFoundError as err:  # pragma: no cover - only while similarity.py is absent
    if err.name != "jaxbrain.metrics.similarity":
        raise
else:
    from jaxbrain.metrics.similarity import *  # noqa: F401,F403,E402

    __all__ += list(getattr(_similarity, "__all__", [n for n in dir(_similarity) if not n.startswith("_")]))
from jaxbrain.metrics.similarity import cka, cka_gram, compare_rdms, rdm, rsa, similarity_scores, spearman, upper_triangle  # noqa: E402,F401
