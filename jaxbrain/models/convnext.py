"""ConvNeXt-T/S/B/L (Liu et al. 2022) in the timm layout.

Patchify stem (4x4 conv, LayerNorm), four stages each opened by a LayerNorm + 2x2 stride-2 conv (not the first),
blocks of depthwise 7x7 conv -> LayerNorm -> Linear(4C) -> GELU -> Linear(C) -> layer scale ``gamma`` plus the
residual; global average pool, ``head.norm``, ``head.fc``. Submodules carry timm's names (``stem.0``,
``stages.2.downsample.1``, ``stages.2.blocks.5.conv_dw``, ``stages.2.blocks.5.mlp.fc1``), so timm state dicts
load through :mod:`jaxbrain.models.convert`. Everything runs channels-last (NHWC), where PyTorch's LayerNorm2d and
the block's channel-last MLP are plain LayerNorm / Linear over the last axis.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.models import convert, initializers, registry

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


def depthwise_conv(conv: nnx.Conv, x: jax.Array) -> jax.Array:
    """The block's depthwise 7x7 conv; on CPU as a sum of shifted products, which XLA:CPU fuses into one loop
    and runs several times faster than its grouped convolution (GPU/TPU keep the native grouped conv)."""
    if jax.default_backend() != "cpu":
        return conv(x)
    kernel = conv.kernel[...].astype(x.dtype)  # (kh, kw, 1, C)
    kh, kw = kernel.shape[:2]
    h, w = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    acc = None
    for dy in range(kh):
        rows = padded[:, dy:dy + h]
        for dx in range(kw):
            term = rows[:, :, dx:dx + w, :] * kernel[dy, dx, 0]
            acc = term if acc is None else acc + term
    # The barrier keeps XLA from fusing the 49 taps into the LayerNorm that follows (it would recompute them).
    return jax.lax.optimization_barrier(acc + conv.bias[...].astype(x.dtype))


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
        return logits, out


def candidate_layers(depths: tuple[int, ...]) -> tuple[str, ...]:
    """The stem, every block output, and the normed pooled features fed to the classifier."""
    blocks = [f"stages.{s}.blocks.{i}" for s, n in enumerate(depths) for i in range(n)]
    return ("stem", *blocks, "head.norm")


def build(variant: str, rngs: nnx.Rngs, num_classes: int | None = None, **overrides) -> ConvNeXt:
    """Randomly initialised ConvNeXt ``variant`` ("T", "S", "B", "L")."""
    fields = {**decode_variant(variant), "num_classes": 1000 if num_classes is None else num_classes, **overrides}
    return ConvNeXt(ConvNeXtConfig(**fields), rngs=rngs)


def load_weights(model: ConvNeXt, path: str | os.PathLike) -> None:
    """Load a timm ConvNeXt checkpoint (.safetensors, or .pth/.bin with torch) in place."""
    convert.load_checkpoint(model, path)


# timm's default ConvNeXt tags: ImageNet statistics, bicubic, crop_pct 0.875.
PREPROCESSING = registry.Preprocessing(resize=256, crop=224, mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD,
                                       interpolation="bicubic")

for _variant in _SIZES:
    _layers = candidate_layers(decode_variant(_variant)["depths"])
    registry.register(registry.ModelSpec(
        name=f"convnext_{_variant.lower()}",
        family="convnext",
        build=lambda rngs, num_classes=None, _v=_variant: build(_v, rngs, num_classes),
        layers=_layers,
        depths=registry.normalised_depths(len(_layers)),
        preprocessing=PREPROCESSING,
        load_weights=load_weights,
        pretraining_samples=None,
    ))
