"""The paper's LoRA fine-tuning: rank 32, alpha 32, dropout 0.1 on qkv, fc1, fc2 of every ViT block, lr 1e-4.

  python -m jaxbrain.launch --config configs/paper/finetune_lora.py:benchmark=<h5>,model=vit_s16,weights=<file>,task_prepared=<dir>,score_results=<score workdir> --workdir runs/ft_lora

`lora_rank=8` or `lora_rank=16` for the rank comparison; the head (`head`) is trained fully, readouts stay frozen, only
adapters and head carry optimizer state; the export has the adapters merged into the weights.
"""

from configs.common import parse_arg
from configs.finetune import ARGUMENTS, finetune_config


def get_config(arg: str | None = None):
    args = parse_arg(arg, **dict(ARGUMENTS, model="vit_s16", lrs=(1e-4,), lora_rank=32))
    config = finetune_config(args)
    config.lock()
    return config
