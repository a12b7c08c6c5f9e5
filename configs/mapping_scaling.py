"""Mapping-data scaling (Fig. 6, Table 2): every readout trained on a fraction F of the train split (3 seeds, no
projection), scored on the unchanged test split, S(F) = E - A F^-alpha fitted on F / 10 per readout.

  python -m jaxbrain.launch --config configs/mapping_scaling.py:benchmark=planted_tokens --workdir runs/mapping

Arguments as configs/probe.py, plus `fractions` (default 0.03+0.1+0.3+1.0) and `n_bootstrap` (resamples of the
fit's rows for the bands, 1,000).
"""

from configs.common import parse_arg
from configs.probe import ARGUMENTS, probe_config


def mapping_config(args):
    config = probe_config(args)
    config.experiment = "mapping_scaling"
    config.fractions = tuple(float(f) for f in args.fractions)
    config.n_bootstrap = args.n_bootstrap
    return config


def get_config(arg: str | None = None):
    config = mapping_config(parse_arg(arg, **dict(ARGUMENTS, fractions=(0.03, 0.1, 0.3, 1.0), n_bootstrap=1000)))
    config.lock()
    return config
