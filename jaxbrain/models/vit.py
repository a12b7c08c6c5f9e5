"""Vision Transformer / DeiT (Dosovitskiy et al. 2021; Touvron et al. 2021) in the timm layout.

Pre-norm blocks with a fused qkv projection, exact-GELU MLP, a class token with learned position embeddings
(``cls_token``, ``pos_embed``), final ``norm`` and linear ``head``. Submodules carry timm's names
(``patch_embed.proj``, ``blocks.9.attn.qkv``, ``blocks.9.mlp.fc2``), so timm state dicts load through
:mod:`jaxbrain.models.convert` without renaming. The forward returns every block output and its sub-steps under
the PyTorch module paths (``blocks.9``, ``blocks.9.norm1``, ``blocks.9.attn``, ``blocks.9.norm2``,
``blocks.9.mlp``), tokens as (batch, 1 + patches, width).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.models import convert, initializers, registry

# width, depth, mlp_dim, heads (big_vision's table)
_SIZES = {
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
}


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int
    img_size: int = 224
    num_classes: int = 1000
    norm_eps: float = 1e-6


def decode_variant(variant: str) -> dict:
    """``"S/16"`` -> ``{"width": 384, "depth": 12, "mlp_dim": 1536, "num_heads": 6, "patch_size": 16}``."""
    try:
        size, patch = variant.split("/")
        width, depth, mlp_dim, heads = _SIZES[size]
        patch_size = int(patch)
    except (ValueError, KeyError):
        raise ValueError(f"unknown ViT variant {variant!r}; expected <size>/<patch> with size in "
                         f"{', '.join(_SIZES)}, e.g. 'S/16'") from None
    return {"width": width, "depth": depth, "mlp_dim": mlp_dim, "num_heads": heads, "patch_size": patch_size}


_trunc = initializers.truncated_normal(0.02)


def _linear(i, o, rngs):
    return nnx.Linear(i, o, kernel_init=_trunc, rngs=rngs)


def _layer_norm(d, eps, rngs):
    return nnx.LayerNorm(d, epsilon=eps, rngs=rngs)


class PatchEmbed(nnx.Module):
    def __init__(self, patch_size: int, width: int, *, rngs: nnx.Rngs):
        self.proj = nnx.Conv(3, width, (patch_size, patch_size), strides=patch_size, padding="VALID",
                             kernel_init=initializers.lecun_normal(), rngs=rngs)

    def __call__(self, images):
        x = self.proj(images)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class Attention(nnx.Module):
    def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs):
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = _linear(width, 3 * width, rngs)
        self.proj = _linear(width, width, rngs)

    def __call__(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        y = jax.nn.dot_product_attention(q, k, v)
        return self.proj(y.reshape(b, n, d))


class Mlp(nnx.Module):
    def __init__(self, width: int, mlp_dim: int, *, rngs: nnx.Rngs):
        self.fc1 = _linear(width, mlp_dim, rngs)
        self.fc2 = _linear(mlp_dim, width, rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
        self.norm1 = _layer_norm(config.width, config.norm_eps, rngs)
        self.attn = Attention(config.width, config.num_heads, rngs=rngs)
        self.norm2 = _layer_norm(config.width, config.norm_eps, rngs)
        self.mlp = Mlp(config.width, config.mlp_dim, rngs=rngs)

    def __call__(self, x, out, prefix):
        y = out[f"{prefix}.norm1"] = self.norm1(x)
        y = out[f"{prefix}.attn"] = self.attn(y)
        x = x + y
        y = out[f"{prefix}.norm2"] = self.norm2(x)
        y = out[f"{prefix}.mlp"] = self.mlp(y)
        return x + y


class VisionTransformer(nnx.Module):
    """``model(images, train=False) -> (logits, out)``; ``out`` keys follow timm module paths, plus
    ``pre_logits`` (the normed class token fed to the head)."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
        if config.img_size % config.patch_size:
            raise ValueError(f"image size {config.img_size} is not a multiple of patch size {config.patch_size}")
        self.config = config
        n_patches = (config.img_size // config.patch_size) ** 2
        self.patch_embed = PatchEmbed(config.patch_size, config.width, rngs=rngs)
        self.cls_token = nnx.Param(initializers.truncated_normal(1e-6)(rngs.params(), (1, 1, config.width)))
        self.pos_embed = nnx.Param(_trunc(rngs.params(), (1, n_patches + 1, config.width)))
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.depth)])
        self.norm = _layer_norm(config.width, config.norm_eps, rngs)
        self.head = nnx.Linear(config.width, config.num_classes, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, images: jax.Array, train: bool = False):
        out = {}
        x = out["patch_embed"] = self.patch_embed(images)
        cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...].astype(x.dtype)
        out["pos_embed"] = x
        for i, block in enumerate(self.blocks):
            x = out[f"blocks.{i}"] = block(x, out, f"blocks.{i}")
        x = out["norm"] = self.norm(x)
        x = out["pre_logits"] = x[:, 0]
        logits = out["head"] = self.head(x)
        return logits, out


def candidate_layers(depth: int) -> tuple[str, ...]:
    """Every block output, then the class token fed to the head."""
    return (*(f"blocks.{i}" for i in range(depth)), "pre_logits")


def build(variant: str, rngs: nnx.Rngs, num_classes: int | None = None, **overrides) -> VisionTransformer:
    """Randomly initialised ViT ``variant`` ("S/16", "B/32", ...); ``overrides`` replace config fields."""
    fields = {**decode_variant(variant), "num_classes": 1000 if num_classes is None else num_classes, **overrides}
    return VisionTransformer(ViTConfig(**fields), rngs=rngs)


def load_weights(model: VisionTransformer, path: str | os.PathLike) -> None:
    """Load a timm ViT/DeiT checkpoint (.safetensors, or .pth/.bin with torch) in place."""
    convert.load_checkpoint(model, path)


# timm's default pretrained tags: augreg ViTs use mean = std = 0.5 and crop_pct 0.9; DeiT ImageNet statistics
# and crop_pct 0.875; both bicubic.
_VIT_PRE = registry.Preprocessing(resize=248, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                  interpolation="bicubic")
_DEIT_PRE = registry.Preprocessing(resize=256, crop=224, mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD,
                                   interpolation="bicubic")

MODELS = {
    # registry name: (variant, preprocessing, pretraining samples)
    "vit_ti16": ("Ti/16", _VIT_PRE, None),
    "vit_s16": ("S/16", _VIT_PRE, None),
    "vit_b16": ("B/16", _VIT_PRE, None),
    "vit_l16": ("L/16", _VIT_PRE, None),
    "vit_s32": ("S/32", _VIT_PRE, None),
    "vit_b32": ("B/32", _VIT_PRE, None),
    "vit_l32": ("L/32", _VIT_PRE, None),
    "vit_h14": ("H/14", _VIT_PRE, None),
    "deit_ti16": ("Ti/16", _DEIT_PRE, 1_281_167.0),
    "deit_s16": ("S/16", _DEIT_PRE, 1_281_167.0),
    "deit_b16": ("B/16", _DEIT_PRE, 1_281_167.0),
}

for _name, (_variant, _pre, _samples) in MODELS.items():
    _layers = candidate_layers(decode_variant(_variant)["depth"])
    registry.register(registry.ModelSpec(
        name=_name,
        family="vit",
        build=lambda rngs, num_classes=None, _v=_variant: build(_v, rngs, num_classes),
        layers=_layers,
        depths=registry.normalised_depths(len(_layers)),
        preprocessing=_pre,
        load_weights=load_weights,
        pretraining_samples=_samples,
    ))
