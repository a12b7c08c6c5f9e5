"""ImageNet ResNet-18/34/50/101/152 (He et al. 2016, v1.5: stride on the 3x3 conv) in the torchvision/timm layout,
and width/depth "flex" ResNets named ``resnet_flex:<variant>`` (:func:`decode_flex`).

Submodules carry the checkpoint names (``conv1``, ``bn1``, ``layer3.2.conv2``, ``layer2.0.downsample.1``,
``fc``), so torchvision and timm state dicts load through :mod:`jaxbrain.models.convert` without renaming.
Images are NHWC; every block output and its sub-steps are returned under their PyTorch module path.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.models import convert, initializers, registry
from jaxbrain.models.layers import max_pool


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    block: str  # "basic" | "bottleneck"
    layers: tuple[int, int, int, int]
    width: int = 64
    num_classes: int = 1000


_VARIANTS = {
    "18": ("basic", (2, 2, 2, 2)),
    "34": ("basic", (3, 4, 6, 3)),
    "50": ("bottleneck", (3, 4, 6, 3)),
    "101": ("bottleneck", (3, 4, 23, 3)),
    "152": ("bottleneck", (3, 8, 36, 3)),
}


def decode_variant(variant: str) -> dict:
    """Size table: ``"50"`` -> ``{"block": "bottleneck", "layers": (3, 4, 6, 3)}``."""
    if variant not in _VARIANTS:
        raise ValueError(f"unknown ResNet variant {variant!r}; known: {', '.join(_VARIANTS)}")
    block, layers = _VARIANTS[variant]
    return {"block": block, "layers": layers}


_kaiming = initializers.he_normal("fan_out")


def _conv(in_ch, out_ch, k, stride, rngs):
    pad = (k - 1) // 2
    return nnx.Conv(in_ch, out_ch, (k, k), strides=stride, padding=((pad, pad), (pad, pad)), use_bias=False,
                    kernel_init=_kaiming, rngs=rngs)


def _bn(ch, rngs):
    return nnx.BatchNorm(ch, momentum=0.9, epsilon=1e-5, rngs=rngs)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """PyTorch ``MaxPool2d(3, stride=2, padding=1)`` on NHWC."""
    return max_pool(x, 3, 2, 1)


class BasicBlock(nnx.Module):
    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = _conv(in_ch, planes, 3, stride, rngs)
        self.bn1 = _bn(planes, rngs)
        self.conv2 = _conv(planes, planes, 3, 1, rngs)
        self.bn2 = _bn(planes, rngs)
        self.downsample = _downsample(in_ch, planes, stride, rngs)

    def __call__(self, x, out, prefix, train=False):
        ura = not train
        y = out[f"{prefix}.conv1"] = self.conv1(x)
        y = out[f"{prefix}.bn1"] = self.bn1(y, use_running_average=ura)
        y = jax.nn.relu(y)
        y = out[f"{prefix}.conv2"] = self.conv2(y)
        y = out[f"{prefix}.bn2"] = self.bn2(y, use_running_average=ura)
        shortcut = _apply_downsample(self.downsample, x, out, prefix, train)
        return jax.nn.relu(y + shortcut)


class Bottleneck(nnx.Module):
    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        out_ch = planes * 4
        self.conv1 = _conv(in_ch, planes, 1, 1, rngs)
        self.bn1 = _bn(planes, rngs)
        self.conv2 = _conv(planes, planes, 3, stride, rngs)
        self.bn2 = _bn(planes, rngs)
        self.conv3 = _conv(planes, out_ch, 1, 1, rngs)
        self.bn3 = _bn(out_ch, rngs)
        self.downsample = _downsample(in_ch, out_ch, stride, rngs)

    def __call__(self, x, out, prefix, train=False):
        ura = not train
        y = out[f"{prefix}.conv1"] = self.conv1(x)
        y = out[f"{prefix}.bn1"] = self.bn1(y, use_running_average=ura)
        y = jax.nn.relu(y)
        y = out[f"{prefix}.conv2"] = self.conv2(y)
        y = out[f"{prefix}.bn2"] = self.bn2(y, use_running_average=ura)
        y = jax.nn.relu(y)
        y = out[f"{prefix}.conv3"] = self.conv3(y)
        y = out[f"{prefix}.bn3"] = self.bn3(y, use_running_average=ura)
        shortcut = _apply_downsample(self.downsample, x, out, prefix, train)
        return jax.nn.relu(y + shortcut)


def _downsample(in_ch, out_ch, stride, rngs):
    if stride == 1 and in_ch == out_ch:
        return None
    return nnx.List([_conv(in_ch, out_ch, 1, stride, rngs), _bn(out_ch, rngs)])


def _apply_downsample(downsample, x, out, prefix, train):
    if downsample is None:
        return x
    conv, bn = downsample
    y = bn(conv(x), use_running_average=not train)
    out[f"{prefix}.downsample"] = y
    return y


class ResNet(nnx.Module):
    """``model(images, train=False) -> (logits, out)``; ``out`` keys follow torchvision module paths."""

    def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs):
        self.config = config
        block_cls = BasicBlock if config.block == "basic" else Bottleneck
        self.conv1 = nnx.Conv(3, config.width, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                              kernel_init=_kaiming, rngs=rngs)
        self.bn1 = _bn(config.width, rngs)
        in_ch = config.width
        for stage, n_blocks in enumerate(config.layers):
            planes = config.width * 2**stage
            blocks = []
            for i in range(n_blocks):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(block_cls(in_ch, planes, stride, rngs=rngs))
                in_ch = planes * block_cls.expansion
            setattr(self, f"layer{stage + 1}", nnx.List(blocks))
        self.fc = nnx.Linear(in_ch, config.num_classes, kernel_init=initializers.lecun_normal(), rngs=rngs)
        self.num_features = in_ch

    def __call__(self, images: jax.Array, train: bool = False):
        out = {}
        x = out["conv1"] = self.conv1(images)
        x = out["bn1"] = self.bn1(x, use_running_average=not train)
        x = out["relu"] = jax.nn.relu(x)
        x = out["maxpool"] = max_pool_3x3_s2(x)
        for stage in range(1, 5):
            for i, block in enumerate(getattr(self, f"layer{stage}")):
                x = out[f"layer{stage}.{i}"] = block(x, out, f"layer{stage}.{i}", train=train)
            out[f"layer{stage}"] = x
        x = out["avgpool"] = jnp.mean(x, axis=(1, 2))
        logits = out["fc"] = self.fc(x)
        return logits, out


def candidate_layers(layers: tuple[int, ...]) -> tuple[str, ...]:
    """Stem (after max-pool), every block output, and the pooled features, in forward order."""
    blocks = [f"layer{s + 1}.{i}" for s, n in enumerate(layers) for i in range(n)]
    return ("maxpool", *blocks, "avgpool")


def build(variant: str, rngs: nnx.Rngs, num_classes: int | None = None, **overrides) -> ResNet:
    """Randomly initialised ResNet-``variant`` ("18", "34", "50", "101", "152")."""
    config = ResNetConfig(**decode_variant(variant), num_classes=1000 if num_classes is None else num_classes,
                          **overrides)
    return ResNet(config, rngs=rngs)


def load_weights(model: ResNet, path: str | os.PathLike) -> None:
    """Load a torchvision or timm ResNet checkpoint (.safetensors, or .pth/.bin with torch) in place."""
    convert.load_checkpoint(model, path)


PREPROCESSING = registry.Preprocessing(resize=256, crop=224, mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD,
                                       interpolation="bilinear")


def decode_flex(variant: str) -> dict:
    """Flex variant ``"w0.5:d1-1-1-1[:basic|:bottleneck]"`` -> ResNet config fields.

    ``w`` multiplies the 64-channel base width (rounded, at least 1 channel; default 1), ``d`` lists the blocks of
    the four stages (default 2-2-2-2), the block type defaults to basic. ``w1:d3-4-6-3:bottleneck`` is ResNet-50.
    """
    fields = {"block": "basic", "layers": (2, 2, 2, 2), "width": 64}
    for part in variant.split(":"):
        try:
            if part in ("basic", "bottleneck"):
                fields["block"] = part
            elif part.startswith("w"):
                multiplier = float(part[1:])
                if not multiplier > 0:
                    raise ValueError
                fields["width"] = max(1, round(64 * multiplier))
            elif part.startswith("d"):
                fields["layers"] = tuple(int(n) for n in part[1:].split("-"))
                if len(fields["layers"]) != 4 or min(fields["layers"]) < 1:
                    raise ValueError
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"bad ResNet flex variant {variant!r} at {part!r}; expected fields w<multiplier>, "
                             f"d<n1>-<n2>-<n3>-<n4> (blocks >= 1), basic|bottleneck, e.g. 'w0.5:d1-1-1-1'") from None
    return fields


def build_flex(variant: str, rngs: nnx.Rngs, num_classes: int | None = None) -> ResNet:
    """Randomly initialised flex ResNet (see :func:`decode_flex`)."""
    return ResNet(ResNetConfig(**decode_flex(variant), num_classes=1000 if num_classes is None else num_classes),
                  rngs=rngs)


# torchvision and timm ResNets share every parameter name (conv1, bn1, layerN.M.*, fc), so one layout loads both.
FAMILIES = (
    registry.Family(
        name="resnet",
        variants={f"resnet{v}": v for v in _VARIANTS},
        build=build,
        layers=lambda v: candidate_layers(decode_variant(v)["layers"]),
        preprocessing=PREPROCESSING,
        load_weights=load_weights,
        pretraining_samples=1_281_167.0,
    ),
    registry.Family(
        name="resnet_flex",
        variants={},
        build=build_flex,
        layers=lambda v: candidate_layers(decode_flex(v)["layers"]),
        preprocessing=PREPROCESSING,
        load_weights=load_weights,
        pretraining_samples=1_281_167.0,
        flex="resnet_flex",
    ),
)
