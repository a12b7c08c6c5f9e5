"""Paired bootstrap differences between two scored models (or two layers of one model).

  python -m jaxbrain.launch --config configs/compare.py:source=runs/quickstart,a=tiny_cnn_generator,b=tiny_cnn_other_seed --workdir runs/compare

Arguments: `source` (a scoring workdir), `a` and `b` (model labels as in results.csv; `b` defaults to `a`),
`layer_a` / `layer_b` (compare these layers instead of the committed ones).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, source="", a="", b="", layer_a="", layer_b="")
    config = ml_collections.ConfigDict(dict(experiment="compare", **args.to_dict()))
    config.lock()
    return config
