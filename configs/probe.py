"""Trained readouts of a layer's tokens: the six readouts of Table S4 (attention probes SS/MS, MLP SS/MS,
low-rank, ridge), 3 seeds, scored by r_NC on the test split.

  python -m jaxbrain.launch --config configs/probe.py:benchmark=planted_tokens --workdir runs/probe
  python -m jaxbrain.launch --config configs/probe.py:benchmark=<h5 or reader:dir>,model=vit_s16,weights=<file>,layers=blocks.8,dataset=nsd --workdir runs/probe

`benchmark` is `planted_tokens` (tokens shipped with it) or any score-pipeline entry (tokens of `model`'s layer:
`layers=LAYER` for every ROI or `ROI=LAYER+ROI=LAYER`); `readouts` a '+'-joined subset of LINEAR-SS, LOWRANK-SS,
MLP-SS, MLP-MS, ATTENTION-SS, ATTENTION-MS. `dataset` picks the Table S6 training overrides (DATASETS below;
`tvsd` follows the reference's TVSD config, 30 epochs / lr 1e-4 / dropout 0.3, as Table S6 gives none);
`epochs`, `lr`, `dropout` override them. `local=true` is a tiny smoke mode (d_model 32, 2 epochs, float32).
Presets: configs/paper/probes*.py.
"""

import ml_collections

from configs.common import parse_arg

# Table S6: epochs, learning rate, dropout per dataset; "default" is Table S5's (10 / 1e-4 / 0.3)
DATASETS = {"default": (10, 1e-4, 0.3), "nsd": (20, 1e-3, 0.8), "meg": (30, 1e-4, 0.8),
            "things_fmri": (30, 1e-4, 0.8), "eeg": (10, 1e-4, 0.5), "tvsd": (30, 1e-4, 0.3)}
READOUTS = ("LINEAR-SS", "LOWRANK-SS", "MLP-SS", "MLP-MS", "ATTENTION-SS", "ATTENTION-MS")

ARGUMENTS = dict(benchmark="planted_tokens", model="", weights="", layers=("",), readouts=READOUTS, seeds=(0, 1, 2),
                 dataset="default", epochs=0, lr=0.0, dropout=-1.0, batch_size=256, compute_dtype="bfloat16",
                 d_model=384, rank=0, hidden=0, devices=1, local=False)


def probe_config(args) -> ml_collections.ConfigDict:
    """The probe config from parsed arguments (shared with configs/mapping_scaling.py and the presets)."""
    if args.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {args.dataset!r}")
    epochs, lr, dropout = DATASETS[args.dataset]
    config = ml_collections.ConfigDict()
    config.experiment = "probe"
    config.benchmarks = tuple(args.benchmark.split("+"))
    config.readouts = tuple(args.readouts)
    config.seeds = tuple(int(s) for s in args.seeds)
    config.layers = tuple(layer for layer in args.layers if layer)
    config.model = ml_collections.ConfigDict(dict(label=args.model or "none", name=args.model, weights=args.weights,
                                                  seed=0, layers=()))
    config.min_ceiling = 10.0
    config.min_pairs = 10
    config.batch_size = 64          # feature extraction
    config.progress = True
    config.planted = ml_collections.ConfigDict(dict(generator="tiny_cnn", seed=0, scale=1.0))
    config.planted_tokens = ml_collections.ConfigDict(dict(n_stimuli=600, n_test=100, n_tokens=8, n_channels=16,
                                                           n_latents=4, n_subjects=3, n_targets=12, sharpness=6.0,
                                                           noise_sd=0.3, n_repeats=4, seed=0))
    config.probe = ml_collections.ConfigDict(dict(
        d_model=args.d_model, n_queries=16, n_heads=16, dropout=dropout if args.dropout < 0 else args.dropout,
        attention_dropout=None, position_base=1e4, query_std=0.02, feed_forward=False, query_self_attention=False,
        token_encoder=False, rank=args.rank, hidden=args.hidden))
    config.probe.attention_dropout = ml_collections.FieldReference(None, field_type=float)
    config.train = ml_collections.ConfigDict(dict(
        epochs=args.epochs or epochs, lr=args.lr or lr, weight_decay=1e-4, clip_norm=1.0, batch_size=args.batch_size,
        compute_dtype=args.compute_dtype, devices=args.devices))
    if args.local:
        config.probe.update(dict(d_model=32, n_heads=4))
        config.train.update(dict(epochs=args.epochs or 2, batch_size=min(args.batch_size, 64),
                                 compute_dtype="float32"))
        config.progress = False
    return config


def get_config(arg: str | None = None):
    config = probe_config(parse_arg(arg, **ARGUMENTS))
    config.lock()
    return config
