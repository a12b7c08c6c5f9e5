"""The paper's neural-data scaling of hybrid fine-tuning: fractions 1-100 % of the neural train split x 3 seeds.

  python -m jaxbrain.launch --config configs/paper/finetune_fractions.py:benchmark=<h5>,model=<name>,weights=<file>,task_prepared=<dir>,score_results=<score workdir> --workdir runs/ft_fractions
  python -m jaxbrain.launch --config configs/fit_scaling.py:source=runs/ft_fractions,delta=1e-5 --workdir runs/ft_law

Table S3 settings (configs/finetune.py) at fractions 0.01, 0.03, 0.1, 0.3, 1.0 and seeds 0, 1, 2, with the
permutation control at full data; `finetune.csv` carries `neural_fraction` (percent), the x axis of the
reduced fine-tuning law (Huber delta 1e-5).
"""

from configs.common import parse_arg
from configs.finetune import ARGUMENTS, finetune_config


def get_config(arg: str | None = None):
    args = parse_arg(arg, **dict(ARGUMENTS, fractions=(0.01, 0.03, 0.1, 0.3, 1.0), seeds=(0, 1, 2)))
    config = finetune_config(args)
    config.lock()
    return config
