"""The paper's scaling fit over parameters N (Fig. 2c, the reduced law without the shift).

  python -m jaxbrain.launch --config configs/paper/scaling_params.py:source=<scoring workdir> --workdir runs/scaling_params

Form: `reduced`, fixed as the reference configs do (`form=auto` applies the paper's text instead: the reduced law
when it fits no worse). Fitted on the controlled suite without SSL and adversarial models; timm models are held out
and their residuals written to holdout.csv. Huber delta 1e-3, 1,000 bootstrap resamples (seed 42) for 95 % bands.
"""

from configs.fit_scaling import get_config as fit_scaling_config


def get_config(arg: str | None = None):
    config = fit_scaling_config(",".join(filter(None, ["axes=params", "form=reduced", arg])))
    return config
