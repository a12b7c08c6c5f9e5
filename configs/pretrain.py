"""Supervised pretraining of registry backbones on a labelled image folder, one run per grid point.

  python -m jaxbrain.launch --config configs/pretrain.py:model=cifar_resnet20,source=<image folder> --workdir runs/pretrain

`source` is a labelled image folder (one folder or zip per class; prepared once into the workdir) or
`prepared=<dir>` a directory made by configs/prepare_images.py. The grid is models x samples_per_class x seeds,
each joined by '+' (`model=cifar_resnet20+cifar_resnet56,samples_per_class=10+100+0,seeds=0+1+2`;
samples_per_class 0 means every image). Exports land in runs/pretrain/export/ and score directly:

  python -m jaxbrain.launch --config configs/score.py:model=cifar_resnet20,weights=runs/pretrain/export/cifar_resnet20_spcall_seed0.safetensors,benchmark=... --workdir runs/score

Real example (CIFAR ResNet-20 from scratch on 9,000 of the CIFAR-10 test JPEGs, validated on the other 1,000):

  python -m jaxbrain.launch --config configs/pretrain.py:model=cifar_resnet20,source=../shared/realdata/cifar10_resnet_akamaster/cifar10_test_jpg,epochs=30,batch_size=128,lr=0.002 --workdir runs/pretrain_cifar

`local=true` is a tiny smoke mode (2 epochs, small batches).
"""

import ml_collections

from configs.common import parse_arg


def train_defaults() -> ml_collections.ConfigDict:
    """Settings every training config shares (optimizer, precision, mesh, checkpoints, input threads)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.progress = True
    config.compute_dtype = "float32"
    config.accum_steps = 1
    config.num_threads = 2
    config.worker_count = 0
    config.optimizer = ml_collections.ConfigDict(dict(
        lr=1e-3, min_lr=0.0, warmup_epochs=1.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05, clip_norm=0.0,
        decay_vectors=True))
    config.mesh = ml_collections.ConfigDict(dict(fsdp=1, rules=(".*=auto",)))
    config.checkpoint = ml_collections.ConfigDict(dict(keep=2, every=0, async_save=True))
    return config


def get_config(arg: str | None = None):
    args = parse_arg(arg, model="cifar_resnet20", source="", prepared="", samples_per_class=(0,), seeds=(0,),
                     epochs=30, batch_size=128, eval_batch_size=256, lr=1e-3, weight_decay=0.05, warmup_epochs=1.0,
                     recipe="auto", compute_dtype="float32", fsdp=1, local=False)
    config = train_defaults()
    config.experiment = "pretrain"
    config.models = tuple(args.model.split("+"))
    config.samples_per_class = tuple(args.samples_per_class)
    config.seeds = tuple(args.seeds)
    config.data = ml_collections.ConfigDict(dict(source=args.source, prepared=args.prepared,
                                                 validation_fraction=0.1, split_seed=0, eval_split="validation"))
    config.epochs = 2 if args.local else args.epochs
    config.batch_size = 16 if args.local else args.batch_size
    config.eval_batch_size = 32 if args.local else args.eval_batch_size
    config.recipe = args.recipe
    config.compute_dtype = args.compute_dtype
    config.mesh.fsdp = args.fsdp
    config.optimizer.lr = args.lr
    config.optimizer.weight_decay = args.weight_decay
    config.optimizer.warmup_epochs = args.warmup_epochs
    config.lock()
    return config
