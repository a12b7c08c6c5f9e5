"""Pretraining end to end: a tiny ResNet on 10 synthetic classes learns, and its export is scorable."""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest
from flax import nnx
from PIL import Image
from safetensors.numpy import load_file

from jaxbrain import launch
from jaxbrain.models import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _class_tree(root: pathlib.Path, n_classes=10, per_class=11, size=36):
    """One folder per class; class c is a noisy image of hue c/10 with a bright square at a class position."""
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True)
        colour = np.array(Image.new("HSV", (1, 1), (int(255 * c / n_classes), 200, 200)).convert("RGB"))[0, 0]
        for k in range(per_class):
            image = np.clip(colour + rng.normal(0, 25, (size, size, 3)), 0, 255)
            y, x = divmod(c, 4)
            image[4 + 7 * y: 10 + 7 * y, 4 + 7 * x: 10 + 7 * x] = 255
            Image.fromarray(image.astype(np.uint8)).save(folder / f"{k:03d}.png")
    return root


def test_tiny_pretraining_learns_and_exports(tmp_path):
    tree = _class_tree(tmp_path / "images")
    config = launch.load_config(f"{ROOT}/configs/pretrain.py:model=cifar_resnet20,source={tree},samples_per_class=8,"
                                "epochs=4,batch_size=16,eval_batch_size=40,lr=0.003,warmup_epochs=0.5")
    with config.unlocked():
        config.progress = False
        config.data.validation_fraction = 0.25
    summary = launch.launch(config, tmp_path / "run")
    label = "cifar_resnet20_spc8_seed0"
    result = summary[label]
    assert result["validation"]["top1"] >= 0.4  # chance is 0.1
    run_dir = tmp_path / "run" / "runs" / label
    train = pd.read_csv(run_dir / "train_metrics.csv")
    steps_per_epoch = 80 // 16
    assert len(train) == 4 * steps_per_epoch
    first, last = train.loss[:steps_per_epoch].mean(), train.loss[-steps_per_epoch:].mean()
    assert last < 0.7 * first
    assert {"lr", "grad_norm", "images_per_s", "data_wait_s"} <= set(train.columns)
    evals = pd.read_csv(run_dir / "eval_metrics.csv")
    assert list(evals.epoch) == [1, 2, 3, 4] and evals.top5.iloc[-1] >= evals.top1.iloc[-1]
    assert (run_dir / "train_curves.png").is_file() and (run_dir / "eval_curves.png").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tensorboard").iterdir())

    meta = json.loads((tmp_path / "run" / "export" / f"{label}.json").read_text())
    weights = load_file(result["weights"])
    trained = sum(v.size for k, v in weights.items() if not k.endswith(("running_mean", "running_var")))
    assert meta["samples"] == 80 and meta["params"] == trained
    assert meta["compute"] == pytest.approx(80 * meta["flops"]) and meta["flops"] > 0
    inventory = pd.read_csv(tmp_path / "run" / "inventory.csv")
    assert inventory.model.tolist() == [label] and inventory.samples.tolist() == [80]

    spec = registry.get("cifar_resnet20")
    fresh = spec.build(rngs=nnx.Rngs(0))
    spec.load_weights(fresh, result["weights"])  # all or nothing: every name and shape must match
    loaded = np.asarray(fresh.linear.kernel[...]).T
    np.testing.assert_array_equal(loaded, weights["linear.weight"])
