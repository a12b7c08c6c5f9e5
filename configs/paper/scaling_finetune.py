"""The paper's fine-tuning data law (Section 4.3, Fig. 5): alignment after hybrid fine-tuning against the percent of
the neural train split used, the reduced law (no shift), Huber delta 1e-5.

  python -m jaxbrain.launch --config configs/paper/scaling_finetune.py:source=<finetune workdir> --workdir runs/ft_law

Points are the sweep's runs (configs/paper/finetune_fractions.py): x = `neural_fraction` from the sweep table
(`<source>/finetune.csv`, used as the inventory), y = the refitted ridge alignment after fine-tuning
(stage `finetune`, metric `refit_r_nc`); permutation controls are left out.
"""

from configs.fit_scaling import get_config as fit_scaling_config


def get_config(arg: str | None = None):
    config = fit_scaling_config(",".join(filter(None, ["axes=neural_fraction", "form=reduced", "delta=1e-5",
                                                        "stage=finetune", "metric=refit_r_nc", "min_models=3", arg])))
    if not config.inventory and config.source:
        config.inventory = f"{config.source}/finetune.csv"
    return config
