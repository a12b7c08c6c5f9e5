"""The paper's pretraining scaling fits, one axis per run (Section 4.1, Fig. 2, Eq. 3):

  python -m jaxbrain.launch --config configs/paper/scaling.py:axis=compute,source=<scoring workdir> --workdir runs/scaling_compute

`axis=compute` (C = D x FLOPs_fwd, Fig. 2a) and `axis=samples` (D, Fig. 2b) fit the shifted law
L = E + A (X + 10^lambda)^-alpha; `axis=params` (N, Fig. 2c) the reduced law without the shift. The form is fixed
as the reference configs do (`form=auto` applies the paper's text instead: the reduced law when it fits no
worse). Fitted on the controlled suite without SSL and adversarial models; timm models are held out and their
residuals written to holdout.csv. Huber delta 1e-3; 1,000 bootstrap resamples (seed 42) give 95 % bands. Other
arguments are those of configs/fit_scaling.py.
"""

from configs.fit_scaling import get_config as fit_scaling_config

FORMS = {"compute": "shifted", "samples": "shifted", "params": "reduced"}


def get_config(arg: str | None = None):
    items = [item for item in (arg or "").split(",") if item.strip()]
    axis = next((item.split("=", 1)[1] for item in items if item.startswith("axis=")), "compute")
    if axis not in FORMS:
        raise ValueError(f"config argument axis={axis!r}: expected one of {', '.join(FORMS)}")
    rest = [item for item in items if not item.startswith("axis=")]
    return fit_scaling_config(",".join([f"axes={axis}", f"form={FORMS[axis]}", *rest]))
