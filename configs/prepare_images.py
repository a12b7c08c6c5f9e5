"""Prepares a labelled image folder (one folder or zip per class) as a tfds ArrayRecord directory for training.

  python -m jaxbrain.launch --config configs/prepare_images.py:source_dir=<image folder>,name=<name> \
      --workdir runs/images

writes `runs/images/<name>/` (train and validation splits, class names, content fingerprint; see
jaxbrain/train/image_folder.py). A folder without train/ and val/ gets a validation split of
`validation_fraction` of each class, drawn with `split_seed`. A rerun with the same content and settings is
skipped; `overwrite=true` replaces a directory prepared from other content. Example (the CIFAR-10 test JPEGs,
9,000 / 1,000):

  python -m jaxbrain.launch --config configs/prepare_images.py:source_dir=../shared/realdata/cifar10_resnet_akamaster/cifar10_test_jpg,name=cifar10_jpg \
      --workdir runs/images
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, source_dir="", name="images", validation_fraction=0.1, split_seed=0, overwrite=False)
    config = ml_collections.ConfigDict()
    config.experiment = "prepare_images"
    config.source_dir = args.source_dir
    config.name = args.name
    config.validation_fraction = args.validation_fraction
    config.split_seed = args.split_seed
    config.overwrite = args.overwrite
    config.lock()
    return config
