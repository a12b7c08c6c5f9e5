"""The readout comparison of Table 2 / Table S4 with the paper's settings (Tables S5-S6) on any benchmark:
ATTENTION-SS/MS, MLP-SS/MS, LOWRANK-SS (parameter-matched h and rho) and LINEAR-SS, 3 seeds, full train split.

  python -m jaxbrain.launch --config configs/paper/probes.py:benchmark=<h5>,model=vit_s16,weights=<file>,layers=<committed layer>,dataset=nsd --workdir runs/probes_nsd
  python -m jaxbrain.launch --config configs/paper/probes.py:mapping=true,benchmark=<h5>,... --workdir runs/mapping_nsd

`dataset` selects the Table S6 overrides (nsd: 20 epochs, lr 1e-3, dropout 0.8; meg and things_fmri: 30 / 1e-4
/ 0.8; eeg: 10 / 1e-4 / 0.5; tvsd: the reference's TVSD config, 30 / 1e-4 / 0.3). `mapping=true` runs the
mapping-data sweep (fractions 0.01, 0.03, 0.1, 0.3, 1.0 x 3 seeds) and fits S(F) per readout.
"""

from configs.common import parse_arg
from configs.mapping_scaling import mapping_config
from configs.probe import ARGUMENTS


def get_config(arg: str | None = None):
    args = parse_arg(arg, **dict(ARGUMENTS, fractions=(0.01, 0.03, 0.1, 0.3, 1.0), n_bootstrap=1000, mapping=False))
    config = mapping_config(args)
    if not args.mapping:
        config.experiment = "probe"
    config.lock()
    return config
