"""The paper's layer sweep (Section 3, Appendix D): every candidate layer projected to 30,000 dimensions with the
sparse random projection, features stored as float16, ridge with LOO over logspace(1, 7, 10), 5 contiguous folds,
layer committed per ROI by the cross-subject CV score; RSA/CKA ("c" and "ve", Figs. S26-S29) at the committed layers.

  python -m jaxbrain.launch --config configs/paper/layer_sweep.py:model=vit_s16,weights=<file>,benchmark=<h5>+<h5> --workdir runs/sweep

The exact Gram matrix (`keep=gram`, the default of configs/score.py) is the unapproximated version of the same fit;
docs/method.md (Features and projection) states both. `scale=` shrinks planted benchmarks for a tiny run.
"""

from configs.common import model_label, parse_arg
from configs.score import base_config


def get_config(arg: str | None = None):
    args = parse_arg(arg, model="tiny_cnn", weights="", seed=0, benchmark="planted_ephys", layers=("",), scale=1.0,
                     keep="projection")
    config = base_config()
    config.benchmarks = tuple(args.benchmark.split("+"))
    config.features.keep = args.keep
    config.features.dtype = "float16"
    config.planted.scale = args.scale
    config.models = {model_label(args.model): {"name": args.model, "weights": args.weights, "seed": args.seed,
                                  "layers": tuple(layer for layer in args.layers if layer)}}
    config.lock()
    return config
