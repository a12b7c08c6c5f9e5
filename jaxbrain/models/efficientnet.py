"""EfficientNet-B0 .. B7 (Tan & Le 2019) in torchvision's layout (``efficientnet_b0_tv``) and timm's
(``efficientnet_b0`` .. ``_b2``; names via :func:`timm_path`).

``features.0``: conv 3x3/2 -> BN -> SiLU; ``features.1`` .. ``features.7``: stages of MBConv blocks (expand 1x1 ->
depthwise kxk -> squeeze-excitation -> project 1x1, residual when stride 1 and widths match); ``features.8``:
conv 1x1 to 4x the last width -> BN -> SiLU; global average pool; ``classifier``: dropout -> Linear. Widths are
B0's scaled by the width multiplier and rounded to multiples of 8 (torchvision's ``_make_divisible``), block
counts scaled by the depth multiplier and rounded up. Parameters carry torchvision's names
(``features.2.0.block.1.0.weight``, ``features.3.1.block.2.fc1.bias``, ``classifier.1.weight``), so torchvision
state dicts load unchanged; ``out`` holds every block and sub-module output under its torchvision path.
Layouts, candidate layers and FLOP convention: docs/method.md, "Model zoo".
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.models import convert, initializers, registry
from jaxbrain.models.layers import depthwise_conv

# B0's stages: expand ratio, kernel, stride, in width, out width, blocks (Tan & Le 2019, Table 1).
_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
           (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))
# variant: width multiplier, depth multiplier, dropout, crop, resize (torchvision's IMAGENET1K_V1 tags)
_SIZES = {
    "B0": (1.0, 1.0, 0.2, 224, 256), "B1": (1.0, 1.1, 0.2, 240, 256), "B2": (1.1, 1.2, 0.3, 288, 288),
    "B3": (1.2, 1.4, 0.3, 300, 320), "B4": (1.4, 1.8, 0.4, 380, 384), "B5": (1.6, 2.2, 0.4, 456, 456),
    "B6": (1.8, 2.6, 0.5, 528, 528), "B7": (2.0, 3.1, 0.5, 600, 600),
}
_TF_PORTED_BN = ("B5", "B6", "B7")  # torchvision builds these with BatchNorm eps 1e-3, momentum 0.01


@dataclasses.dataclass(frozen=True)
class EfficientNetConfig:
    width_mult: float
    depth_mult: float
    dropout: float
    num_classes: int = 1000
    stochastic_depth: float = 0.2  # drop rate of the last block, linear in block index from 0
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9  # flax convention (PyTorch's 0.1)
    layout: str = "timm"  # names of `out` keys and checkpoint tensors: "timm" or "torchvision"


def decode_variant(variant: str) -> dict:
    """``"B2"`` -> ``{"width_mult": 1.1, "depth_mult": 1.2, "dropout": 0.3, ...}``."""
    if variant not in _SIZES:
        raise ValueError(f"unknown EfficientNet variant {variant!r}; known: {', '.join(_SIZES)}")
    width, depth, dropout = _SIZES[variant][:3]
    fields = {"width_mult": width, "depth_mult": depth, "dropout": dropout}
    if variant in _TF_PORTED_BN:
        fields.update(bn_eps=1e-3, bn_momentum=0.99)
    return fields


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: nearest multiple of ``divisor``, never below 90 % of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def stage_plan(config: EfficientNetConfig) -> list[tuple[int, int, int, int, int, int]]:
    """Per stage: expand ratio, kernel, stride, in width, out width, blocks, after width and depth scaling."""
    return [(e, k, s, make_divisible(i * config.width_mult), make_divisible(o * config.width_mult),
             math.ceil(n * config.depth_mult)) for e, k, s, i, o, n in _STAGES]


_kaiming = initializers.he_normal("fan_out")


def _conv_bn(in_ch, out_ch, k, stride, config, rngs, groups=1):
    pad = (k - 1) // 2
    conv = nnx.Conv(in_ch, out_ch, (k, k), strides=stride, padding=((pad, pad), (pad, pad)), use_bias=False,
                    feature_group_count=groups, kernel_init=_kaiming, rngs=rngs)
    return nnx.List([conv, nnx.BatchNorm(out_ch, momentum=config.bn_momentum, epsilon=config.bn_eps, rngs=rngs)])


def _apply_conv_bn(pair, x, train, act=True):
    conv, bn = pair
    y = depthwise_conv(conv, x) if conv.feature_group_count > 1 else conv(x)
    y = bn(y, use_running_average=not train)
    return jax.nn.silu(y) if act else y


class SqueezeExcitation(nnx.Module):
    def __init__(self, channels: int, squeeze: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Conv(channels, squeeze, (1, 1), kernel_init=_kaiming, rngs=rngs)
        self.fc2 = nnx.Conv(squeeze, channels, (1, 1), kernel_init=_kaiming, rngs=rngs)

    def __call__(self, x):
        scale = jnp.mean(x, axis=(1, 2), keepdims=True)
        scale = jax.nn.sigmoid(self.fc2(jax.nn.silu(self.fc1(scale))))
        return x * scale


class MBConv(nnx.Module):
    def __init__(self, in_ch, out_ch, expand, kernel, stride, drop_rate, config, *, rngs: nnx.Rngs):
        wide = make_divisible(in_ch * expand)
        steps = [_conv_bn(in_ch, wide, 1, 1, config, rngs)] if wide != in_ch else []
        steps.append(_conv_bn(wide, wide, kernel, stride, config, rngs, groups=wide))
        steps.append(SqueezeExcitation(wide, max(1, in_ch // 4), rngs=rngs))
        steps.append(_conv_bn(wide, out_ch, 1, 1, config, rngs))
        self.block = nnx.List(steps)
        self.residual = stride == 1 and in_ch == out_ch
        self.stochastic_depth = nnx.Dropout(drop_rate, broadcast_dims=(1, 2, 3), rngs=rngs)

    def __call__(self, x, out, prefix, train):
        y = x
        last = len(self.block) - 1
        for j, step in enumerate(self.block):
            if isinstance(step, SqueezeExcitation):
                y = step(y)
            else:
                y = _apply_conv_bn(step, y, train, act=j != last)
            out[f"{prefix}.block.{j}"] = y
        if self.residual:
            y = self.stochastic_depth(y, deterministic=not train) + x
        return y


class EfficientNet(nnx.Module):
    """``model(images, train=False) -> (logits, out)``; ``out`` keys are torchvision module paths."""

    def __init__(self, config: EfficientNetConfig, *, rngs: nnx.Rngs):
        self.config = config
        plan = stage_plan(config)
        total = sum(stage[-1] for stage in plan)
        features, index = [_conv_bn(3, plan[0][3], 3, 2, config, rngs)], 0
        for expand, kernel, stride, in_ch, out_ch, blocks in plan:
            stage = []
            for i in range(blocks):
                drop = config.stochastic_depth * index / total
                stage.append(MBConv(in_ch if i == 0 else out_ch, out_ch, expand, kernel, stride if i == 0 else 1,
                                    drop, config, rngs=rngs))
                index += 1
            features.append(nnx.List(stage))
        last = plan[-1][4]
        features.append(_conv_bn(last, 4 * last, 1, 1, config, rngs))
        self.features = nnx.List(features)
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.classifier = nnx.Dict({"1": nnx.Linear(4 * last, config.num_classes,
                                                    kernel_init=initializers.torch_default(), rngs=rngs)})
        self.num_features = 4 * last

    def __call__(self, images: jax.Array, train: bool = False):
        out = {}
        x = out["features.0"] = _apply_conv_bn(self.features[0], images, train)
        for s in range(1, len(self.features) - 1):
            for i, block in enumerate(self.features[s]):
                x = out[f"features.{s}.{i}"] = block(x, out, f"features.{s}.{i}", train)
            out[f"features.{s}"] = x
        head = len(self.features) - 1
        x = out[f"features.{head}"] = _apply_conv_bn(self.features[head], x, train)
        x = out["avgpool"] = jnp.mean(x, axis=(1, 2))
        x = out["classifier.0"] = self.dropout(x, deterministic=not train)
        logits = out["classifier.1"] = self.classifier["1"](x)
        if self.config.layout == "timm":
            out = {timm_path(key): value for key, value in out.items() if key != "classifier.0"}
        return logits, out


def candidate_layers(config: EfficientNetConfig) -> tuple[str, ...]:
    """The stem, every MBConv block output, the head conv (``features.8``) and the pooled features."""
    blocks = [f"features.{s + 1}.{i}" for s, stage in enumerate(stage_plan(config)) for i in range(stage[-1])]
    names = ("features.0", *blocks, f"features.{len(_STAGES) + 1}", "avgpool")
    return tuple(timm_path(n) for n in names) if config.layout == "timm" else names


_TIMM_TOP = {"features.0.0": "conv_stem", "features.0.1": "bn1", "features.0": "bn1", "features.8.0": "conv_head",
             "features.8.1": "bn2", "features.8": "bn2", "avgpool": "global_pool", "classifier.1": "classifier"}
# block.J of torchvision's MBConv -> timm's names; stage 1 (expand ratio 1) has no expansion conv.
_TIMM_BLOCK = {
    True: {"0.0": "conv_dw", "0.1": "bn1", "0": "bn1", "1": "se", "2.0": "conv_pw", "2.1": "bn2", "2": "bn2"},
    False: {"0.0": "conv_pw", "0.1": "bn1", "0": "bn1", "1.0": "conv_dw", "1.1": "bn2", "1": "bn2", "2": "se",
            "3.0": "conv_pwl", "3.1": "bn3", "3": "bn3"},
}
_TIMM_SE = {"fc1": "conv_reduce", "fc2": "conv_expand"}


def timm_path(path: str) -> str:
    """torchvision module/parameter path -> timm's: ``features.0.0`` -> ``conv_stem``, ``features.S.I`` ->
    ``blocks.(S-1).I`` with ``block.J.*`` -> ``conv_pw``/``bn1``/``conv_dw``/``bn2``/``se.conv_reduce``/
    ``se.conv_expand``/``conv_pwl``/``bn3``, ``features.8`` -> ``conv_head``/``bn2``, ``classifier.1`` ->
    ``classifier``."""
    parts = path.split(".")
    leaf = [parts.pop()] if parts[-1] in ("weight", "bias", "running_mean", "running_var") else []
    module = ".".join(parts)
    for tv, timm in _TIMM_TOP.items():
        if module == tv:
            return ".".join([timm, *leaf])
    match = re.fullmatch(r"features\.(\d+)(?:\.(\d+)(?:\.block\.(.+))?)?", module)
    if match is None or match[1] in ("0", str(len(_STAGES) + 1)):
        return path
    stage, block, inner = int(match[1]), match[2], match[3]
    name = f"blocks.{stage - 1}" + ("" if block is None else f".{block}")
    if inner is not None:
        step, _, se_part = inner.partition(".")
        if se_part in _TIMM_SE and _TIMM_BLOCK[stage == 1].get(step) == "se":
            inner_name = f"se.{_TIMM_SE[se_part]}"
        else:
            inner_name = _TIMM_BLOCK[stage == 1][inner]
        name = f"{name}.{inner_name}"
    return ".".join([name, *leaf])


def build(variant: str, rngs: nnx.Rngs, num_classes: int | None = None, **overrides) -> EfficientNet:
    """Randomly initialised EfficientNet ``variant`` ("B0" .. "B7"), timm layout unless ``layout`` is given."""
    fields = {**decode_variant(variant), "num_classes": 1000 if num_classes is None else num_classes, **overrides}
    return EfficientNet(EfficientNetConfig(**fields), rngs=rngs)


def build_torchvision(variant: str, rngs: nnx.Rngs, num_classes: int | None = None) -> EfficientNet:
    """EfficientNet ``variant`` whose ``out`` keys follow torchvision's module paths."""
    return build(variant, rngs, num_classes, layout="torchvision")


def load_weights(model: EfficientNet, path: str | os.PathLike) -> None:
    """Load a timm EfficientNet checkpoint (names via :func:`timm_path`) in place."""
    convert.load_checkpoint(model, path, rename=timm_path)


def load_torchvision_weights(model: EfficientNet, path: str | os.PathLike) -> None:
    """Load a torchvision EfficientNet checkpoint (.safetensors, or .pth with torch) in place."""
    convert.load_checkpoint(model, path)


def torchvision_preprocessing(variant: str) -> registry.Preprocessing:
    """torchvision's IMAGENET1K_V1 transforms: bicubic resize, centre crop, ImageNet statistics."""
    crop, resize = _SIZES[variant][3:]
    return registry.Preprocessing(resize=resize, crop=crop, mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD,
                                  interpolation="bicubic")


# timm's default tags (efficientnet_b0.ra_in1k, b1.ft_in1k, b2.ra_in1k): input size and crop_pct, bicubic.
_TIMM_INPUT = {"B0": (224, 0.875), "B1": (240, 0.9), "B2": (256, 0.875)}


def timm_preprocessing(variant: str) -> registry.Preprocessing:
    if variant not in _TIMM_INPUT:
        return torchvision_preprocessing(variant)
    crop, crop_pct = _TIMM_INPUT[variant]
    return registry.Preprocessing(resize=math.floor(crop / crop_pct), crop=crop, mean=registry.IMAGENET_MEAN,
                                  std=registry.IMAGENET_STD, interpolation="bicubic")


FAMILIES = (
    registry.Family(
        name="efficientnet",
        variants={f"efficientnet_{v.lower()}": v for v in _TIMM_INPUT},
        build=build,
        layers=lambda v: candidate_layers(EfficientNetConfig(**decode_variant(v))),
        preprocessing=timm_preprocessing,
        load_weights=load_weights,
        pretraining_samples=1_281_167.0,
    ),
    registry.Family(
        name="efficientnet_torchvision",
        variants={f"efficientnet_{v.lower()}_tv": v for v in _SIZES},
        build=build_torchvision,
        layers=lambda v: candidate_layers(EfficientNetConfig(**decode_variant(v), layout="torchvision")),
        preprocessing=torchvision_preprocessing,
        load_weights=load_torchvision_weights,
        pretraining_samples=1_281_167.0,
    ),
)
