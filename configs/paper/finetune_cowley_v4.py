"""Hybrid fine-tuning of the pretrained CIFAR ResNet-20 on Cowley et al. (2023) V4 with CIFAR-10 as the task.

  python -m jaxbrain.launch --config configs/paper/finetune_cowley_v4.py --workdir runs/finetune_cowley

The paper's objective, optimizer and schedule (configs/finetune.py) on the real data in ../shared/realdata: the
V4 responses of session 210325 (576 train / 64 test images), the akamaster ResNet-20 weights, the CIFAR-10 test
JPEGs (9,000 / 1,000) as the task stream, the readout at `layer` (default layer2.2, override with
`layer=...` or pass `score_results=<score workdir>` to use the committed layer), float32 on CPU, with the
stimulus-response permutation control. `epochs`, `lr`, `task_batch`, `neural_batch` shorten it for a quick run.
"""

import pathlib

from configs.common import parse_arg
from configs.finetune import ARGUMENTS, finetune_config

REALDATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


def get_config(arg: str | None = None):
    args = parse_arg(arg, layer="layer2.2", score_results="", epochs=20, lr=1e-5, task_batch=512,
                     neural_batch=256, seeds=(0,), control=True, compute_dtype="float32", local=False)
    base = parse_arg(None, **ARGUMENTS)
    base.update(dict(
        model="cifar_resnet20", benchmark=f"cowley2023:{REALDATA / 'cowley2023_v4'}", rois=("V4",),
        layers=() if args.score_results else (f"V4={args.layer}",), score_results=args.score_results,
        weights=str(REALDATA / "cifar10_resnet_akamaster" / "weights" / "resnet20-12fca82f.th"),
        task_source=str(REALDATA / "cifar10_resnet_akamaster" / "cifar10_test_jpg"), epochs=(args.epochs,),
        lrs=(args.lr,), seeds=args.seeds, control=args.control, local=args.local))
    config = finetune_config(base)
    config.lora.head = "linear"
    config.task_batch_size = min(config.task_batch_size, args.task_batch)
    config.neural_batch_size = min(config.neural_batch_size, args.neural_batch)
    config.compute_dtype = args.compute_dtype
    config.lock()
    return config
