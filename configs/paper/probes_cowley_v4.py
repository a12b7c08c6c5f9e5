"""The six readouts of Table S4 on real macaque V4 (Cowley et al. 2023, session 210325: one subject, 576 train /
64 test images) from the tokens of the pretrained CIFAR ResNet-20's `layer` (default layer2.2: 16 x 16 x 32 ->
256 tokens of 32 channels), Table S5 probe settings and 3 seeds.

  python -m jaxbrain.launch --config configs/paper/probes_cowley_v4.py --workdir runs/probes_cowley
  python -m jaxbrain.launch --config configs/paper/probes_cowley_v4.py:mapping=true --workdir runs/mapping_cowley

With one subject the MS readouts are the SS readouts (one system, same initialisation and data): their rows are
equal, as they should be. `mapping=true` runs the mapping-data sweep (configs/mapping_scaling.py) instead;
`epochs`, `seeds`, `readouts`, `local` and the other configs/probe.py arguments shorten it.
"""

import pathlib

from configs.common import parse_arg
from configs.mapping_scaling import mapping_config
from configs.probe import ARGUMENTS

REALDATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


def get_config(arg: str | None = None):
    defaults = dict(ARGUMENTS, benchmark=f"cowley2023:{REALDATA / 'cowley2023_v4'}", model="cifar_resnet20",
                    weights=str(REALDATA / "cifar10_resnet_akamaster" / "weights" / "resnet20-12fca82f.th"),
                    layers=("layer2.2",), fractions=(0.1, 0.3, 1.0), n_bootstrap=1000, mapping=False)
    args = parse_arg(arg, **defaults)
    config = mapping_config(args)
    if not args.mapping:
        config.experiment = "probe"
    config.lock()
    return config
