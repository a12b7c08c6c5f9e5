"""Input-pipeline speed: decoded-and-augmented training images/s per CPU core, jaxbrain against torchvision/timm.

  python benchmarks/input_pipeline.py [--workers 0,2] [--batch 32] [--batches 12] [--recipes resnet,deit]

Data: the 100 ImageNet photos of ../shared/realdata/imagenet_samples_100 (about 500 x 375 JPEGs) grouped into
10 class folders, prepared once into a tfds ArrayRecord directory in a temporary folder. At 224 px:

* ResNet recipe: jaxbrain ``train_iterator`` with ``augment.recipe("resnet")`` against torchvision
  ``ImageFolder`` + ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``.
* DeiT recipe: jaxbrain ``augment.recipe("deit")`` (RandAugment m9 mstd0.5, random erasing 0.25, mixup/cutmix,
  label smoothing, all inside the pipeline) against timm ``create_transform(224, is_training=True,
  auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic", re_prob=0.25, re_mode="pixel")`` in the
  DataLoader and timm ``Mixup`` applied to each batch in the consumer loop.

Both sides use the same number of worker processes (0: all in the main process; jaxbrain then uses one
thread). After a warm-up of two batches (worker start-up excluded), ``--batches`` batches are timed; images/s
per core = images/s / max(1, workers). Prints one row per (recipe, workers) and the ratio jaxbrain / torch.
The CPU is shared with other jobs on the development machine, so rates there are indicative.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
sys.path.insert(0, str(ROOT))  # time the jaxbrain of this checkout
SIZE = 224


def _class_tree(root: pathlib.Path) -> pathlib.Path:
    photos = sorted((REALDATA / "imagenet_samples_100").glob("*.JPEG"))
    if len(photos) < 100:
        raise SystemExit(f"need the 100 photos of {REALDATA / 'imagenet_samples_100'}")
    for k, photo in enumerate(photos):
        folder = root / f"class_{k % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / photo.name)
    return root


def _rate(batches, batch_size: int, n: int) -> float:
    for _ in range(2):
        next(batches)
    start = time.perf_counter()
    for _ in range(n):
        next(batches)
    return n * batch_size / (time.perf_counter() - start)


def jaxbrain_rate(prepared_dir: str, recipe_name: str, workers: int, batch: int, n: int) -> float:
    from jaxbrain.models import registry
    from jaxbrain.train import augment, image_folder, input_pipeline

    prep = registry.Preprocessing(256, SIZE, registry.IMAGENET_MEAN, registry.IMAGENET_STD)
    source = image_folder.load_prepared(prepared_dir).source("train")
    iterator = input_pipeline.train_iterator(
        source, augment.recipe(recipe_name, prep), global_batch_size=batch, process_index=0, process_count=1,
        worker_count=workers, num_threads=1, prefetch=2)
    rate = _rate(iterator, batch, n)
    iterator.close()
    return rate


def _posterize_any_bits(img, bits_to_keep, **_):
    """timm's posterize with 0 bits allowed (black), as Pillow < 13 did; Pillow 13 refuses 0 bits and timm's
    ``PosterizeIncreasing`` asks for 0 at magnitude 10 (about 2 % of its draws under mstd 0.5)."""
    mask = (0xFF << (8 - bits_to_keep)) & 0xFF
    return img if bits_to_keep >= 8 else img.point([i & mask for i in range(256)] * 3)


def _torch_transform(recipe_name: str):
    from timm.data import auto_augment, create_transform
    from torchvision import transforms

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = _posterize_any_bits

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    if recipe_name == "resnet":
        return transforms.Compose([transforms.RandomResizedCrop(SIZE), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(mean, std)])
    return create_transform(SIZE, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic",
                            re_prob=0.25, re_mode="pixel", re_count=1, mean=mean, std=std)


def torch_rate(tree: pathlib.Path, recipe_name: str, workers: int, batch: int, n: int) -> float:
    import torch
    from timm.data import Mixup
    from torchvision import datasets

    torch.set_num_threads(1)
    dataset = datasets.ImageFolder(str(tree), transform=_torch_transform(recipe_name))
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**9)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0,
                                         prefetch_factor=2 if workers else None)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=10)

    def batches():
        for images, labels in loader:
            yield mixup(images, labels) if recipe_name == "deit" else (images, labels)

    return _rate(batches(), batch, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per run")
    parser.add_argument("--recipes", default="resnet,deit")
    args = parser.parse_args()
    from jaxbrain.train import image_folder

    with tempfile.TemporaryDirectory() as tmp:
        tree = _class_tree(pathlib.Path(tmp) / "tree")
        prepared = image_folder.prepare_image_folder(tree, pathlib.Path(tmp) / "prepared", validation_fraction=0)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; batch {args.batch}, "
              f"{args.batches} timed batches, {SIZE} px")
        print("| recipe | workers | jaxbrain img/s | per core | torchvision/timm img/s | per core | ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for recipe_name in args.recipes.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                ours = jaxbrain_rate(prepared.path, recipe_name, workers, args.batch, args.batches)
                theirs = torch_rate(tree, recipe_name, workers, args.batch, args.batches)
                cores = max(1, workers)
                print(f"| {recipe_name} | {workers} | {ours:.1f} | {ours / cores:.1f} | {theirs:.1f} | "
                      f"{theirs / cores:.1f} | {ours / theirs:.2f} |", flush=True)


if __name__ == "__main__":
    main()
