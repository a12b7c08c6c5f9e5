"""The paper's scaling fit over pretraining samples D (Fig. 2b, Eq. 3 with the 10^lambda shift).

  python -m jaxbrain.launch --config configs/paper/scaling_samples.py:source=<scoring workdir> --workdir runs/scaling_samples

Form: `shifted`, fixed as the reference configs do (`form=auto` applies the paper's text instead: the reduced law
when it fits no worse). Fitted on the controlled suite without SSL and adversarial models; timm models are held out
and their residuals written to holdout.csv. Huber delta 1e-3, 1,000 bootstrap resamples (seed 42) for 95 % bands.
"""

from configs.fit_scaling import get_config as fit_scaling_config


def get_config(arg: str | None = None):
    config = fit_scaling_config(",".join(filter(None, ["axes=samples", "form=shifted", arg])))
    return config
