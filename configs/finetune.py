"""Hybrid neural fine-tuning (task + frozen-readout neural loss), the paper's protocol by default.

  python -m jaxbrain.launch --config configs/finetune.py:model=cifar_resnet20,weights=<checkpoint>,benchmark=<benchmark>,task_source=<image folder>,score_results=runs/score --workdir runs/finetune

`benchmark` is a NeuralDataset HDF5 file or `reader:source_dir`; `rois` the ROIs to fine-tune on (default the
paper's: IT for TVSD and THINGS-fMRI, ventral for NSD, OP / MLO+MLP for EEG / MEG; subjects pooled);
each ROI's layer comes from a score run (`score_results=<score workdir>`) or `layers=V4=layer2.2+IT=layer3.1`.
The task stream is a labelled image folder (`task_source`) or a prepared directory (`task_prepared`).
Sweeps: `fractions=0.01+0.1+1.0`, `seeds=0+1+2`, `lrs=1e-5+1e-4`, `epochs=20`; `control=true` adds the
stimulus-response permutation control of every point; `lora_rank=32` trains LoRA adapters and the head only
(lr 1e-4 in the paper's shared setting). The baseline and each fine-tuned model are rescored by the score
pipeline on the benchmark and on `rescore=<h5>+<h5>` (alignment change per benchmark in results.csv). `local=true` is a tiny smoke mode (1 epoch, tiny batches, float32).
Presets for the paper's settings are in configs/paper/.
"""

import ml_collections

from configs.common import parse_arg
from configs.pretrain import train_defaults
from jaxbrain.ridge import DEFAULT_ALPHAS


def finetune_config(args) -> ml_collections.ConfigDict:
    """The fine-tuning config from parsed arguments (shared with the presets in configs/paper/)."""
    config = train_defaults()
    config.experiment = "finetune"
    config.benchmark = args.benchmark
    config.rois = tuple(r for r in args.rois if r)
    config.layers = tuple(item for item in args.layers if item)
    config.score_results = args.score_results
    config.model = ml_collections.ConfigDict(dict(name=args.model, label="", weights=args.weights, seed=0,
                                                  num_classes=args.num_classes))
    config.task = ml_collections.ConfigDict(dict(source=args.task_source, prepared=args.task_prepared,
                                                 validation_fraction=0.1))
    config.fractions, config.seeds = tuple(args.fractions), tuple(args.seeds)
    config.lrs, config.epoch_grid = tuple(args.lrs), tuple(args.epochs)
    config.permutation_control = args.control
    config.epochs = int(args.epochs[0])                  # set per grid point
    config.task_batch_size, config.neural_batch_size = 512, 256
    config.eval_batch_size = 128
    config.task_weight, config.neural_weight = 0.1, 100.0
    config.optimizer.update(dict(lr=float(args.lrs[0]), min_lr=1e-6, warmup_epochs=5.0, weight_decay=0.05))
    config.compute_dtype = "bfloat16"
    config.recipe = "auto"
    config.augment = True
    config.alphas = tuple(DEFAULT_ALPHAS.tolist())
    config.min_ceiling = 10.0
    # the baseline and every fine-tuned model rescored by the score pipeline (exact kernel, no projection) on
    # the fine-tuning benchmark and these other benchmarks (HDF5 files or reader:source_dir)
    config.rescore = ml_collections.ConfigDict(dict(enabled=True, benchmarks=tuple(b for b in args.rescore if b),
                                                    layers=()))
    config.lora = ml_collections.ConfigDict(dict(rank=args.lora_rank, alpha=32.0, dropout=0.1, head="head"))
    if args.local:
        config.epoch_grid, config.epochs = (1,), 1
        config.task_batch_size, config.neural_batch_size, config.eval_batch_size = 8, 8, 32
        config.compute_dtype = "float32"
    return config


ARGUMENTS = dict(model="cifar_resnet20", weights="", num_classes=0, benchmark="", rois=("",), layers=("",),
                 score_results="", task_source="", task_prepared="", fractions=(1.0,), seeds=(0,), lrs=(1e-5,),
                 epochs=(20,), control=False, lora_rank=0, rescore=("",), local=False)


def get_config(arg: str | None = None):
    config = finetune_config(parse_arg(arg, **ARGUMENTS))
    config.lock()
    return config
