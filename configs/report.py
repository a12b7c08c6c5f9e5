"""A Markdown report (tables + PNGs) from any workdir's results.csv.

  python -m jaxbrain.launch --config configs/report.py --config.source=runs/quickstart --workdir runs/report

Arguments (`configs/report.py:key=value,...`): `source` (workdir with results.csv), `scaling` (also fit scaling
laws, default false; needs at least 4 models with inventory data), `inventory` (CSV for models outside the
registry), `axes` (`compute+samples+params`), `n_bootstrap` (1000).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg: str | None = None):
    args = parse_arg(arg, source="", scaling=False, inventory="", axes=("compute", "samples", "params"),
                     n_bootstrap=1000)
    config = ml_collections.ConfigDict()
    config.experiment = "report"
    config.source = args.source
    config.scaling = args.scaling
    config.inventory = args.inventory
    config.axes = args.axes
    config.n_bootstrap = args.n_bootstrap
    return config
