"""Quickstart: the whole scoring pipeline on planted benchmarks, with no files from outside the package.

  python -m jaxbrain.launch --config configs/quickstart.py --workdir runs/quickstart

Three generated benchmarks (ephys, fMRI, EEG) whose responses are known linear maps of known layers of a small
random CNN, plus trial noise of known variance. The generating network must commit each ROI to its planted layer
with r_NC near 1; a second network of the same architecture with other weights serves as a control.
Arguments: `scale` (stimulus and target counts, default 1.0), `keep` (gram|projection), `control` (also score the
control network, default true).
"""

from configs.common import parse_arg
from configs.score import base_config


def get_config(arg: str | None = None):
    args = parse_arg(arg, scale=1.0, keep="gram", control=True)
    config = base_config()
    config.benchmarks = ("planted_ephys", "planted_fmri", "planted_eeg")
    config.planted.scale = args.scale
    config.features.keep = args.keep
    config.models = {"tiny_cnn_generator": {"name": "tiny_cnn", "weights": "", "seed": 0, "layers": ()}}
    if args.control:
        config.models["tiny_cnn_other_seed"] = {"name": "tiny_cnn", "weights": "", "seed": 1, "layers": ()}
    config.lock()
    return config
