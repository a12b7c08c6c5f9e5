"""Pretrained vs untrained CIFAR ResNet-20 on real macaque V4 recordings (Cowley et al. 2023, session 210325).

  python -m jaxbrain.launch --config configs/cowley_v4.py --workdir runs/cowley_v4

Reads the release folder (default `../shared/realdata/cowley2023_v4`) and the pretrained weights (default
`../shared/realdata/cifar10_resnet_akamaster/weights/resnet20-12fca82f.th`); override with `source=` and `weights=`.
"""

import pathlib

from configs.common import parse_arg
from configs.score import base_config

REALDATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "realdata"


def get_config(arg: str | None = None):
    args = parse_arg(arg, source=f"{REALDATA}/cowley2023_v4",
                     weights=f"{REALDATA}/cifar10_resnet_akamaster/weights/resnet20-12fca82f.th", keep="gram")
    config = base_config()
    config.benchmarks = (f"cowley2023:{args.source}",)
    config.features.keep = args.keep
    config.models = {
        "resnet20_pretrained": {"name": "cifar_resnet20", "weights": args.weights, "seed": 0, "layers": ()},
        "resnet20_untrained": {"name": "cifar_resnet20", "weights": "", "seed": 0, "layers": ()},
    }
    config.lock()
    return config
