"""ConvNeXt-T/S/B/L (Liu et al. 2022) in the timm layout.

Patchify stem (4x4 conv, LayerNorm), four stages each opened by a LayerNorm + 2x2 stride-2 conv (not the first),
blocks of depthwise 7x7 conv -> LayerNorm -> Linear(4C) -> GELU -> Linear(C) -> layer scale ``gamma`` plus the
residual; global average pool, ``head.norm``, ``head.fc``. Submodules carry timm's names (``stem.0``,
``stages.2.downsample.1``, ``stages.2.blocks.5.conv_dw``, ``stages.2.blocks.5.mlp.fc1``), so timm state dicts
load through :mod:`jaxbrain.models.convert`; ``convnext_*_tv`` names load torchvision checkpoints
(``features.N.M.block.*``, :func:`torchvision_path`) and name their layers as torchvision does, and
``convnext_flex:<variant>`` scales width and depth (:func:`decode_flex`; docs/method.md, "Model zoo").
Everything runs channels-last (NHWC), where PyTorch's LayerNorm2d and the block's channel-last MLP are plain
LayerNorm / Linear over the last axis.
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.models import convert, initializers, layers, registry

_SIZES = {
    "T": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "S": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "B": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "L": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}


@dataclasses.dataclass(frozen=True)
class ConvNeXtConfig:
    depths: tuple[int, ...]
    dims: tuple[int, ...]
    num_classes: int = 1000
    layer_scale_init: float = 1e-6
    norm_eps: float = 1e-6
    layout: str = "timm"  # names of `out` keys: "timm" or "torchvision" (see torchvision_path)


def decode_variant(variant: str) -> dict:
    """``"T"`` -> ``{"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768)}``."""
    if variant not in _SIZES:
        raise ValueError(f"unknown ConvNeXt variant {variant!r}; known: {', '.join(_SIZES)}")
    depths, dims = _SIZES[variant]
    return {"depths": depths, "dims": dims}


_trunc = initializers.truncated_normal(0.02)


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, hidden, kernel_init=_trunc, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, kernel_init=_trunc, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


depthwise_conv = layers.depthwise_conv  # kept under its old name


class ConvNeXtBlock(nnx.Module):
    def __init__(self, dim: int, config: ConvNeXtConfig, *, rngs: nnx.Rngs):
        self.conv_dw = nnx.Conv(dim, dim, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=dim,
                                kernel_init=_trunc, rngs=rngs)
        self.norm = nnx.LayerNorm(dim, epsilon=config.norm_eps, rngs=rngs)
        self.mlp = Mlp(dim, 4 * dim, rngs=rngs)
        self.gamma = nnx.Param(jnp.full((dim,), config.layer_scale_init, jnp.float32))

    def __call__(self, x, out, prefix):
        y = out[f"{prefix}.conv_dw"] = depthwise_conv(self.conv_dw, x)
        y = out[f"{prefix}.norm"] = self.norm(y)
        y = out[f"{prefix}.mlp"] = self.mlp(y)
        return x + y * self.gamma[...].astype(y.dtype)


class ConvNeXtStage(nnx.Module):
    def __init__(self, in_dim: int, dim: int, depth: int, config: ConvNeXtConfig, *, rngs: nnx.Rngs):
        if in_dim != dim:
            self.downsample = nnx.List([
                nnx.LayerNorm(in_dim, epsilon=config.norm_eps, rngs=rngs),
                nnx.Conv(in_dim, dim, (2, 2), strides=2, padding="VALID", kernel_init=_trunc, rngs=rngs),
            ])
        else:
            self.downsample = None
        self.blocks = nnx.List([ConvNeXtBlock(dim, config, rngs=rngs) for _ in range(depth)])

    def __call__(self, x, out, prefix):
        if self.downsample is not None:
            norm, conv = self.downsample
            x = out[f"{prefix}.downsample"] = conv(norm(x))
        for i, block in enumerate(self.blocks):
            x = out[f"{prefix}.blocks.{i}"] = block(x, out, f"{prefix}.blocks.{i}")
        return x


class Head(nnx.Module):
    def __init__(self, dim: int, config: ConvNeXtConfig, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(dim, epsilon=config.norm_eps, rngs=rngs)
        self.fc = nnx.Linear(dim, config.num_classes, kernel_init=_trunc, rngs=rngs)


class ConvNeXt(nnx.Module):
    """``model(images, train=False) -> (logits, out)``; ``out`` keys follow timm module paths."""

    def __init__(self, config: ConvNeXtConfig, *, rngs: nnx.Rngs):
        self.config = config
        dims = config.dims
        self.stem = nnx.List([
            nnx.Conv(3, dims[0], (4, 4), strides=4, padding="VALID", kernel_init=_trunc, rngs=rngs),
            nnx.LayerNorm(dims[0], epsilon=config.norm_eps, rngs=rngs),
        ])
        in_dims = (dims[0], *dims[:-1])
        self.stages = nnx.List([
            ConvNeXtStage(i, d, n, config, rngs=rngs) for i, d, n in zip(in_dims, dims, config.depths)
        ])
        self.head = Head(dims[-1], config, rngs=rngs)

    def __call__(self, images: jax.Array, train: bool = False):
        out = {}
        conv, norm = self.stem
        x = out["stem"] = norm(conv(images))
        for i, stage in enumerate(self.stages):
            x = out[f"stages.{i}"] = stage(x, out, f"stages.{i}")
        x = out["head.global_pool"] = jnp.mean(x, axis=(1, 2))
        x = out["head.norm"] = self.head.norm(x)
        logits = out["head.fc"] = self.head.fc(x)
        if self.config.layout == "torchvision":
            out = {torchvision_path(key): value for key, value in out.items()}
        return logits, out


def candidate_layers(depths: tuple[int, ...], layout: str = "timm") -> tuple[str, ...]:
    """The stem, every block output, and the normed pooled features fed to the classifier."""
    blocks = [f"stages.{s}.blocks.{i}" for s, n in enumerate(depths) for i in range(n)]
    names = ("stem", *blocks, "head.norm")
    return tuple(torchvision_path(n) for n in names) if layout == "torchvision" else names


_TV_BLOCK_PARTS = ((".mlp.fc1", ".block.3"), (".mlp.fc2", ".block.5"), (".mlp", ".block.5"), (".conv_dw", ".block.0"),
                   (".norm", ".block.2"), (".gamma", ".layer_scale"))
_TV_HEAD = {"head.global_pool": "avgpool", "head.norm": "classifier.0", "head.fc": "classifier.2"}


def torchvision_path(path: str) -> str:
    """timm module/parameter path -> torchvision's: ``stem`` -> ``features.0``, ``stages.s.downsample`` ->
    ``features.(2s)``, ``stages.s.blocks.i`` -> ``features.(2s+1).i`` (``conv_dw``/``norm``/``mlp.fc1``/``mlp.fc2``
    -> ``block.0/2/3/5``, ``gamma`` -> ``layer_scale``), ``head.norm``/``head.fc`` -> ``classifier.0``/``.2``."""
    for head, tv in _TV_HEAD.items():
        if path == head or path.startswith(head + "."):
            return tv + path[len(head):]
    if path == "stem" or path.startswith("stem."):
        return "features.0" + path[4:]
    match = re.fullmatch(r"stages\.(\d+)(\.downsample|\.blocks\.(\d+))?(.*)", path)
    if match is None:
        return path
    stage, part, block, rest = int(match[1]), match[2], match[3], match[4]
    if part == ".downsample":
        return f"features.{2 * stage}{rest}"
    if part is None:
        return f"features.{2 * stage + 1}{rest}"
    for ours, tv in _TV_BLOCK_PARTS:
        if rest == ours or rest.startswith(ours + "."):
            rest = tv + rest[len(ours):]
            break
    return f"features.{2 * stage + 1}.{block}{rest}"


def build(variant: str, rngs: nnx.Rngs, num_classes: int | None = None, **overrides) -> ConvNeXt:
    """Randomly initialised ConvNeXt ``variant`` ("T", "S", "B", "L")."""
    fields = {**decode_variant(variant), "num_classes": 1000 if num_classes is None else num_classes, **overrides}
    return ConvNeXt(ConvNeXtConfig(**fields), rngs=rngs)


def build_torchvision(variant: str, rngs: nnx.Rngs, num_classes: int | None = None) -> ConvNeXt:
    """ConvNeXt ``variant`` whose ``out`` keys follow torchvision's module paths."""
    return build(variant, rngs, num_classes, layout="torchvision")


def decode_flex(variant: str) -> dict:
    """Flex variant ``"w0.5:d3-3-9-3"`` -> ConvNeXt config fields.

    ``w`` multiplies ConvNeXt-T's widths 96/192/384/768 (each rounded, at least 1; default 1), ``d`` lists the
    blocks of the four stages (default 3-3-9-3). ``w1:d3-3-9-3`` is ConvNeXt-T.
    """
    multiplier, depths = 1.0, _SIZES["T"][0]
    for part in variant.split(":"):
        try:
            if part.startswith("w"):
                multiplier = float(part[1:])
                if not multiplier > 0:
                    raise ValueError
            elif part.startswith("d"):
                depths = tuple(int(n) for n in part[1:].split("-"))
                if len(depths) != 4 or min(depths) < 1:
                    raise ValueError
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"bad ConvNeXt flex variant {variant!r} at {part!r}; expected fields w<multiplier>, "
                             f"d<n1>-<n2>-<n3>-<n4> (blocks >= 1), e.g. 'w0.5:d2-2-6-2'") from None
    return {"depths": depths, "dims": tuple(max(1, round(d * multiplier)) for d in _SIZES["T"][1])}


def build_flex(variant: str, rngs: nnx.Rngs, num_classes: int | None = None) -> ConvNeXt:
    """Randomly initialised flex ConvNeXt (see :func:`decode_flex`), timm layout."""
    fields = {**decode_flex(variant), "num_classes": 1000 if num_classes is None else num_classes}
    return ConvNeXt(ConvNeXtConfig(**fields), rngs=rngs)


def load_weights(model: ConvNeXt, path: str | os.PathLike) -> None:
    """Load a timm ConvNeXt checkpoint (.safetensors, or .pth/.bin with torch) in place."""
    convert.load_checkpoint(model, path)


def load_torchvision_weights(model: ConvNeXt, path: str | os.PathLike) -> None:
    """Load a torchvision ConvNeXt checkpoint in place (names via :func:`torchvision_path`; layer scales are
    stored (C, 1, 1) there)."""
    state_dict = convert.strip_prefix(convert.read_state_dict(path), "module.")
    state_dict = {k: (v.reshape(-1) if k.endswith("layer_scale") else v) for k, v in state_dict.items()}
    convert.load_state_dict(model, state_dict, source=os.fspath(path), rename=torchvision_path)


# timm's default ConvNeXt tags: ImageNet statistics, bicubic, crop_pct 0.875; torchvision's IMAGENET1K_V1
# transforms: resize as in TORCHVISION_RESIZE, bilinear, crop 224.
PREPROCESSING = registry.Preprocessing(resize=256, crop=224, mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD,
                                       interpolation="bicubic")
TORCHVISION_RESIZE = {"T": 236, "S": 230, "B": 232, "L": 232}

FAMILIES = (
    registry.Family(
        name="convnext",
        variants={f"convnext_{v.lower()}": v for v in _SIZES},
        build=build,
        layers=lambda v: candidate_layers(decode_variant(v)["depths"]),
        preprocessing=PREPROCESSING,
        load_weights=load_weights,
    ),
    registry.Family(
        name="convnext_torchvision",
        variants={f"convnext_{v.lower()}_tv": v for v in _SIZES},
        build=build_torchvision,
        layers=lambda v: candidate_layers(decode_variant(v)["depths"], layout="torchvision"),
        preprocessing=lambda v: registry.Preprocessing(resize=TORCHVISION_RESIZE[v], crop=224,
                                                       mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD),
        load_weights=load_torchvision_weights,
        pretraining_samples=1_281_167.0,
    ),
    registry.Family(
        name="convnext_flex",
        variants={},
        build=build_flex,
        layers=lambda v: candidate_layers(decode_flex(v)["depths"]),
        preprocessing=PREPROCESSING,
        load_weights=load_weights,
        flex="convnext_flex",
    ),
)
