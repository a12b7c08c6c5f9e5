"""Scaling-law fits over a scoring workdir's results.csv and the model inventory.

  python -m jaxbrain.launch --config configs/fit_scaling.py --config.source=runs/score --workdir runs/scaling

Arguments (`configs/fit_scaling.py:key=value,...`): `source` (workdir with results.csv), `inventory` (CSV with
columns model, family, params, flops, samples, compute; empty = the model registry), `axes` (`compute+samples+params`),
`n_bootstrap` (1000), `seed` (42), `delta` (Huber delta, 1e-3; 1e-5 for fine-tuning), `min_models` (4), `form`
(auto: the paper's text, the reduced law when it fits no worse; shifted or reduced fix it, as the reference configs
do), `exclude_objectives` (SSL+adversarial, left out of the fits as in the paper), `holdout_sources` (timm: held out
as external validation; their residuals go to holdout.csv). Without `inventory`, models are described by the
inventory columns of results.csv (the score experiment writes them) and then by the registry. `stage` / `metric`
pick the results rows fitted (test / r_nc; a fine-tuning sweep: finetune / refit_r_nc).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, source="", inventory="", axes=("compute", "samples", "params"), n_bootstrap=1000,
                     seed=42, delta=1e-3, min_models=4, form="auto", exclude_objectives=("SSL", "adversarial"),
                     holdout_sources=("timm",), stage="test", metric="r_nc")
    config = ml_collections.ConfigDict()
    config.experiment = "fit_scaling"
    config.source = args.source
    config.inventory = args.inventory
    config.axes = args.axes
    config.n_bootstrap = args.n_bootstrap
    config.seed = args.seed
    config.delta = args.delta
    config.min_models = args.min_models
    config.form = args.form
    config.exclude_objectives = args.exclude_objectives
    config.holdout_sources = args.holdout_sources
    config.stage = args.stage
    config.metric = args.metric
    config.grid = ml_collections.ConfigDict()   # empty: the paper's start grid (scaling.DEFAULT_GRID)
    return config
