"""Score registered backbones on neural benchmarks (planted, prepared HDF5 files, or `reader:source_dir`).

  python -m jaxbrain.launch --config configs/score.py:model=vit_s16,benchmark=planted_ephys --workdir runs/score

`model` is a registry name (`weights=` a checkpoint path, empty for random weights); `benchmark` one entry or
several joined by '+': `planted_ephys`, a prepared `.h5` file, or `reader:source_dir[?option=value&...]`;
`keep` gram (exact kernel) or projection (sparse random projection to 30,000 dims).
"""

import ml_collections

from configs.common import model_label, parse_arg
from jaxbrain.ridge import DEFAULT_ALPHAS


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by every scoring config (DESIGN.md section 3)."""
    config = ml_collections.ConfigDict()
    config.experiment = "score"
    config.seed = 0
    config.progress = True
    config.batch_size = 64
    config.stimulus_cache = True        # decoded, resized and cropped stimuli kept in workdir/stimuli for every model
    config.min_ceiling = 10.0           # percent; EEG/MEG use sqrt(NC/100) > 0.1 instead
    config.similarity = True            # RSA/CKA ("c" and "ve") at the committed layers, on the test split
    config.min_test_stimuli = 20        # a smaller test split is scored with a warning
    config.n_bootstrap = 1000           # resamples of the test stimuli (and subjects) for 95 % intervals
    config.on_change = "new"            # rerun with other settings: "new" scores them beside the old; "refuse"
    config.benchmarks = ()
    config.models = ml_collections.ConfigDict()
    config.features = ml_collections.ConfigDict(dict(keep="gram", projection_dim=30000, seed=0, dtype="float32"))
    config.ridge = ml_collections.ConfigDict(dict(alphas=tuple(DEFAULT_ALPHAS.tolist()),
                                                  alpha_per_target=False))
    config.cv = ml_collections.ConfigDict(dict(n_splits=5, shuffle=False))
    config.planted = ml_collections.ConfigDict(dict(generator="tiny_cnn", seed=0, scale=1.0))
    return config


def get_config(arg: str | None = None):
    args = parse_arg(arg, model="tiny_cnn", weights="", seed=0, benchmark="planted_ephys", keep="gram",
                     layers=("",))
    config = base_config()
    config.benchmarks = tuple(args.benchmark.split("+"))
    config.features.keep = args.keep
    config.models = {model_label(args.model): {"name": args.model, "weights": args.weights, "seed": args.seed,
                                  "layers": tuple(layer for layer in args.layers if layer)}}
    config.lock()
    return config
