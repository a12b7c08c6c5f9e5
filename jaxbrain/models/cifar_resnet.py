"""CIFAR-10 ResNet-20/32/44/56 (He et al. 2016, section 4.2) in the layout of akamaster/pytorch_resnet_cifar10.

Three stages of ``n`` BasicBlocks (16/32/64 channels, n = 3/5/7/9), 3x3 convolutions without bias, batch norm,
the parameter-free option-A shortcut (stride-2 subsampling plus zero channels, planes//4 on each side), global
average pooling and a linear classifier. Submodules carry the checkpoint's names (``conv1``, ``layer2.3.bn1``,
``linear``), so the published ``.th`` files load by name; see :func:`load_pretrained`.
"""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.models import convert, initializers, registry

DEPTHS = {"cifar_resnet20": 3, "cifar_resnet32": 5, "cifar_resnet44": 7, "cifar_resnet56": 9}
CHECKPOINT_FILES = {
    "cifar_resnet20": "resnet20-12fca82f.th",
    "cifar_resnet32": "resnet32-d509ac18.th",
    "cifar_resnet44": "resnet44-014dd654.th",
    "cifar_resnet56": "resnet56-4bfd9763.th",
}
WEIGHTS_DIR = (
    pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata" / "cifar10_resnet_akamaster" / "weights"
)
WIDTHS = (16, 32, 64)
PREPROCESSING = registry.Preprocessing(resize=32, crop=32, mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD)

_kaiming = initializers.he_normal("fan_in")


def _conv3x3(in_ch: int, out_ch: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(in_ch, out_ch, (3, 3), strides=stride, padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=_kaiming, rngs=rngs)


def _bn(ch: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(ch, momentum=0.9, epsilon=1e-5, rngs=rngs)


class BasicBlock(nnx.Module):
    """conv-bn-relu-conv-bn plus the option-A shortcut, then relu."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = _conv3x3(in_ch, out_ch, stride, rngs)
        self.bn1 = _bn(out_ch, rngs)
        self.conv2 = _conv3x3(out_ch, out_ch, 1, rngs)
        self.bn2 = _bn(out_ch, rngs)
        self.stride = stride
        self.pad = (out_ch - in_ch) // 2 if (stride != 1 or in_ch != out_ch) else 0
        self.project = stride != 1 or in_ch != out_ch
        if self.project and out_ch - in_ch != 2 * (out_ch // 4):
            raise ValueError(f"option-A shortcut needs out = 2 * in channels, got {in_ch} -> {out_ch}")

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
        y = self.bn2(self.conv2(y), use_running_average=not train)
        shortcut = x
        if self.project:
            shortcut = x[:, :: self.stride, :: self.stride, :]
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (self.pad, self.pad)))
        return jax.nn.relu(y + shortcut)


class CifarResNet(nnx.Module):
    """ResNet-(6n+2) for 32x32 images: ``model(images, train=False) -> (logits, out)``.

    ``out`` holds ``conv1``, ``bn1``, ``relu`` (the stem output), every block ``layer{s}.{i}``, ``avgpool`` and
    ``linear`` (the logits).
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, *, rngs: nnx.Rngs):
        self.conv1 = _conv3x3(3, WIDTHS[0], 1, rngs)
        self.bn1 = _bn(WIDTHS[0], rngs)
        in_ch = WIDTHS[0]
        for stage, width in enumerate(WIDTHS):
            blocks = []
            for i in range(blocks_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(in_ch, width, stride, rngs=rngs))
                in_ch = width
            setattr(self, f"layer{stage + 1}", nnx.List(blocks))
        self.linear = nnx.Linear(WIDTHS[-1], num_classes, kernel_init=_kaiming, rngs=rngs)

    def __call__(self, images: jax.Array, train: bool = False):
        out = {}
        x = out["conv1"] = self.conv1(images)
        x = out["bn1"] = self.bn1(x, use_running_average=not train)
        x = out["relu"] = jax.nn.relu(x)
        for stage in range(1, len(WIDTHS) + 1):
            for i, block in enumerate(getattr(self, f"layer{stage}")):
                x = out[f"layer{stage}.{i}"] = block(x, train=train)
        x = out["avgpool"] = jnp.mean(x, axis=(1, 2))
        logits = out["linear"] = self.linear(x)
        return logits, out


def candidate_layers(blocks_per_stage: int) -> tuple[str, ...]:
    """The stem output, every block output, and the pooled features, in forward order."""
    blocks = [f"layer{s}.{i}" for s in range(1, len(WIDTHS) + 1) for i in range(blocks_per_stage)]
    return ("relu", *blocks, "avgpool")


def default_checkpoint(name: str) -> pathlib.Path:
    """Path of the published akamaster weights for ``name`` in the shared real-data folder."""
    if name not in CHECKPOINT_FILES:
        raise KeyError(f"no pretrained checkpoint for {name!r}; known: {', '.join(CHECKPOINT_FILES)}")
    return (WEIGHTS_DIR / CHECKPOINT_FILES[name]).resolve()


def load_pretrained(model: CifarResNet, path: str | os.PathLike) -> None:
    """Load an akamaster ``resnet*.th`` checkpoint (legacy torch pickle, read without torch) in place.

    All or nothing: a missing, unexpected or mis-shaped tensor raises ``convert.WeightLoadError`` naming the
    file and every offending tensor; a corrupt or truncated file raises an error naming the file.
    """
    convert.load_checkpoint(model, path, strip="module.")


def pretrained(name: str = "cifar_resnet20", path: str | os.PathLike | None = None) -> CifarResNet:
    """``name`` with the published weights loaded (from ``path``, default :func:`default_checkpoint`)."""
    model = build(name, nnx.Rngs(0))
    load_pretrained(model, default_checkpoint(name) if path is None else path)
    return model


def build(name: str, rngs: nnx.Rngs, num_classes: int | None = None) -> CifarResNet:
    """Randomly initialised ``name`` (e.g. ``cifar_resnet20``); 10 classes unless told otherwise."""
    return CifarResNet(DEPTHS[name], 10 if num_classes is None else num_classes, rngs=rngs)


FAMILIES = (
    registry.Family(
        name="cifar_resnet",
        variants={name: name for name in DEPTHS},
        build=build,
        layers=lambda name: candidate_layers(DEPTHS[name]),
        preprocessing=PREPROCESSING,
        load_weights=load_pretrained,
        pretraining_samples=50_000.0,
    ),
)
