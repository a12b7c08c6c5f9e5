"""Ridge regression with exact leave-one-out selection of the penalty, in JAX (docs/method.md, "Ridge estimator
and solvers"). Laid out like himalaya:

* :mod:`._core`: pure jitted kernels (eigen-bases, LOO denominators, per-target and shared penalty searches);
* :mod:`._solvers`: :func:`solve_ridge_loo` (the penalty search over streamed target chunks) and
  :func:`fit_predict_splits` (one kernel per layer serving every outer fold and the final fit);
* :mod:`._sklearn_api`: :class:`RidgeCV`, a scikit-learn estimator (``kernel="linear" | "precomputed"``).
"""

from jaxbrain.ridge._core import Basis, centre_cross_gram, centre_gram
from jaxbrain.ridge._sklearn_api import RidgeCV
from jaxbrain.ridge._solvers import (DEFAULT_ALPHAS, LooProblem, LooSolution, SplitFit, fit_predict_splits,
                                     solve_ridge_loo)

__all__ = [
    "DEFAULT_ALPHAS",
    "Basis",
    "LooProblem",
    "LooSolution",
    "RidgeCV",
    "SplitFit",
    "centre_cross_gram",
    "centre_gram",
    "fit_predict_splits",
    "solve_ridge_loo",
]
