"""Vision Transformers in the timm layout: ViT/DeiT, distilled DeiT, DINOv2 (+registers), DINOv3, CLIP image towers.

Pre-norm blocks with a fused qkv projection and an MLP, prefix tokens (class; distillation or registers) and a
final ``norm``. Options on :class:`ViTConfig` cover the variants: ``distilled`` (DeiT's ``dist_token`` and
``head_dist``, logits averaged at inference), ``num_reg_tokens`` (register tokens), ``pos_embed`` ("learned" over
prefix + patches, "learned_patches" over patches only as DINOv2-reg, "rope" for DINOv3's rotary embedding),
``layer_scale`` (``ls1``/``ls2``), ``pre_norm`` (CLIP's ``norm_pre``), ``act`` ("gelu" or CLIP's "quick_gelu"),
``global_pool`` ("token" or "avg" over patch tokens). Submodules carry timm's names (``patch_embed.proj``,
``blocks.9.attn.qkv``, ``blocks.9.mlp.fc2``, ``blocks.9.ls1.gamma``), so timm state dicts load through
:mod:`jaxbrain.models.convert`; other layouts (torchvision, timm's Eva for DINOv3) are key maps in
:mod:`jaxbrain.models.vit_layouts`.

The forward returns every block output and its sub-steps under the PyTorch module paths (``blocks.9``,
``blocks.9.norm1``, ``blocks.9.attn``, ``blocks.9.ls1``, ``blocks.9.norm2``, ``blocks.9.mlp``, ``blocks.9.ls2``),
tokens as (batch, prefix + patches, width) in the order [class, distillation | registers, patches]
(:func:`token_layout`); ``pre_logits`` is the pooled vector fed to the head. See docs/method.md, "Vision
transformer variants".
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.models import initializers, registry, rope, vit_layouts

# width, depth, mlp_dim, heads (big_vision's table)
_SIZES = {
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
}

_POS_EMBEDS = ("learned", "learned_patches", "rope")
_ACTIVATIONS = ("gelu", "quick_gelu")
_POOLS = ("token", "avg")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int
    img_size: int = 224
    num_classes: int = 1000  # 0: no head, logits are the pooled features (timm's Identity head)
    norm_eps: float = 1e-6
    distilled: bool = False
    num_reg_tokens: int = 0
    pos_embed: str = "learned"
    layer_scale: float | None = None  # initial value of ls1/ls2 gammas; None: no layer scale
    pre_norm: bool = False
    act: str = "gelu"
    qkv_bias: bool = True
    patch_bias: bool = True
    global_pool: str = "token"
    rope_temperature: float = 100.0

    def __post_init__(self):
        for field, value, allowed in (("pos_embed", self.pos_embed, _POS_EMBEDS), ("act", self.act, _ACTIVATIONS),
                                      ("global_pool", self.global_pool, _POOLS)):
            if value not in allowed:
                raise ValueError(f"ViT {field} must be one of {allowed}, got {value!r}")
        if self.distilled and self.num_reg_tokens:
            raise ValueError("a distilled ViT has no register tokens (DeiT uses the slot for its distillation token)")

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + int(self.distilled) + self.num_reg_tokens


def token_layout(config: ViTConfig) -> dict[str, slice]:
    """Which positions of a block output hold which tokens: ``class``, ``distillation`` or ``registers``,
    ``patches`` (row-major patch grid)."""
    layout = {"class": slice(0, 1)}
    if config.distilled:
        layout["distillation"] = slice(1, 2)
    if config.num_reg_tokens:
        layout["registers"] = slice(1, 1 + config.num_reg_tokens)
    layout["patches"] = slice(config.num_prefix_tokens, None)
    return layout


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


FLEX_PREFIX = "vit_flex"


def decode_flex(name: str) -> dict:
    """``"vit_flex:d384:L6:h6:p16"`` -> config fields; optional ``:m<mlp_dim>`` (default 4 x width).

    Fields: ``d`` width, ``L`` depth (blocks), ``h`` heads, ``p`` patch size, ``m`` MLP hidden size; any order
    after the prefix, each once. One name per point of a width/depth sweep (docs/method.md, "Vision transformer
    variants").
    """
    keys = {"d": "width", "L": "depth", "h": "num_heads", "p": "patch_size", "m": "mlp_dim"}
    prefix, *parts = name.split(":")
    fields = {}
    for part in parts:
        key, value = part[:1], part[1:]
        if key not in keys or keys[key] in fields or not value.isdigit() or int(value) < 1:
            fields = None
            break
        fields[keys[key]] = int(value)
    if prefix != FLEX_PREFIX or fields is None or not {"width", "depth", "num_heads", "patch_size"} <= set(fields):
        raise ValueError(f"bad flex ViT name {name!r}; expected '{FLEX_PREFIX}:d<width>:L<depth>:h<heads>:p<patch>"
                         f"[:m<mlp_dim>]', e.g. '{FLEX_PREFIX}:d384:L6:h6:p16'")
    fields.setdefault("mlp_dim", 4 * fields["width"])
    if fields["width"] % fields["num_heads"]:
        raise ValueError(f"flex ViT {name!r}: width {fields['width']} is not divisible by {fields['num_heads']} heads")
    return fields


_trunc = initializers.truncated_normal(0.02)


def _linear(i, o, rngs, use_bias=True):
    return nnx.Linear(i, o, use_bias=use_bias, kernel_init=_trunc, rngs=rngs)


def _layer_norm(d, eps, rngs):
    return nnx.LayerNorm(d, epsilon=eps, rngs=rngs)


def quick_gelu(x):
    """CLIP's GELU approximation x * sigmoid(1.702 x) (OpenAI checkpoints were trained with it)."""
    return x * jax.nn.sigmoid(1.702 * x)


class PatchEmbed(nnx.Module):
    def __init__(self, patch_size: int, width: int, *, use_bias: bool = True, rngs: nnx.Rngs):
        self.proj = nnx.Conv(3, width, (patch_size, patch_size), strides=patch_size, padding="VALID",
                             use_bias=use_bias, kernel_init=initializers.lecun_normal(), rngs=rngs)

    def __call__(self, images):
        x = self.proj(images)
        return x.reshape(x.shape[0], -1, x.shape[-1]), x.shape[1:3]


class Attention(nnx.Module):
    def __init__(self, width: int, num_heads: int, *, qkv_bias: bool = True, rngs: nnx.Rngs):
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = _linear(width, 3 * width, rngs, use_bias=qkv_bias)
        self.proj = _linear(width, width, rngs)

    def __call__(self, x, rotary=None):
        """``rotary``: None or (sin, cos, num_prefix_tokens) of :mod:`jaxbrain.models.rope`."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if rotary is not None:
            sin, cos, n_prefix = rotary
            q, k = rope.apply(q, sin, cos, n_prefix), rope.apply(k, sin, cos, n_prefix)
        y = jax.nn.dot_product_attention(q, k, v)
        return self.proj(y.reshape(b, n, d))


class Mlp(nnx.Module):
    def __init__(self, width: int, mlp_dim: int, *, act: str = "gelu", rngs: nnx.Rngs):
        self.act = act
        self.fc1 = _linear(width, mlp_dim, rngs)
        self.fc2 = _linear(mlp_dim, width, rngs)

    def __call__(self, x):
        h = self.fc1(x)
        h = quick_gelu(h) if self.act == "quick_gelu" else jax.nn.gelu(h, approximate=False)
        return self.fc2(h)


class LayerScale(nnx.Module):
    def __init__(self, width: int, init_value: float):
        self.gamma = nnx.Param(jnp.full((width,), init_value, jnp.float32))

    def __call__(self, x):
        return x * self.gamma[...].astype(x.dtype)


class Block(nnx.Module):
    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
        self.norm1 = _layer_norm(config.width, config.norm_eps, rngs)
        self.attn = Attention(config.width, config.num_heads, qkv_bias=config.qkv_bias, rngs=rngs)
        self.norm2 = _layer_norm(config.width, config.norm_eps, rngs)
        self.mlp = Mlp(config.width, config.mlp_dim, act=config.act, rngs=rngs)
        scaled = config.layer_scale is not None
        self.ls1 = LayerScale(config.width, config.layer_scale) if scaled else None
        self.ls2 = LayerScale(config.width, config.layer_scale) if scaled else None

    def __call__(self, x, out, prefix, rotary=None):
        y = out[f"{prefix}.norm1"] = self.norm1(x)
        y = out[f"{prefix}.attn"] = self.attn(y, rotary)
        if self.ls1 is not None:
            y = out[f"{prefix}.ls1"] = self.ls1(y)
        x = x + y
        y = out[f"{prefix}.norm2"] = self.norm2(x)
        y = out[f"{prefix}.mlp"] = self.mlp(y)
        if self.ls2 is not None:
            y = out[f"{prefix}.ls2"] = self.ls2(y)
        return x + y


def _token(rngs, n, width):
    return nnx.Param(initializers.truncated_normal(1e-6)(rngs.params(), (1, n, width)))


class VisionTransformer(nnx.Module):
    """``model(images, train=False) -> (logits, out)``; ``out`` keys follow timm module paths, plus
    ``pre_logits`` (the pooled vector fed to the head)."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
        if config.img_size % config.patch_size:
            raise ValueError(f"image size {config.img_size} is not a multiple of patch size {config.patch_size}")
        self.config = config
        d = config.width
        n_patches = (config.img_size // config.patch_size) ** 2
        self.patch_embed = PatchEmbed(config.patch_size, d, use_bias=config.patch_bias, rngs=rngs)
        self.cls_token = _token(rngs, 1, d)
        self.dist_token = _token(rngs, 1, d) if config.distilled else None
        self.reg_token = _token(rngs, config.num_reg_tokens, d) if config.num_reg_tokens else None
        if config.pos_embed == "rope":
            self.pos_embed = None
        else:
            n_pos = n_patches + (config.num_prefix_tokens if config.pos_embed == "learned" else 0)
            self.pos_embed = nnx.Param(_trunc(rngs.params(), (1, n_pos, d)))
        self.norm_pre = _layer_norm(d, config.norm_eps, rngs) if config.pre_norm else None
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.depth)])
        self.norm = _layer_norm(d, config.norm_eps, rngs)
        self.head = self._head(config.num_classes, rngs)
        self.head_dist = self._head(config.num_classes if config.distilled else 0, rngs)

    def _head(self, num_classes, rngs):
        if not num_classes:
            return None
        return nnx.Linear(self.config.width, num_classes, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def _embed(self, x, grid):
        """Prefix tokens, then position information: learned table added (to prefix + patches or patches
        only), or rotary tables for the attention layers."""
        c = self.config
        b, _, d = x.shape
        prefix = [jnp.broadcast_to(t[...].astype(x.dtype), (b, t.shape[1], d))
                  for t in (self.cls_token, self.dist_token, self.reg_token) if t is not None]
        rotary = None
        if c.pos_embed == "rope":
            sin, cos = rope.dinov3_sin_cos(tuple(grid), d // c.num_heads, c.rope_temperature)
            rotary = (sin, cos, c.num_prefix_tokens)
        elif c.pos_embed == "learned_patches":
            x = x + self._pos_table(x, grid)
        x = jnp.concatenate([*prefix, x], axis=1)
        if c.pos_embed == "learned":
            x = x + self._pos_table(x, grid)
        return x, rotary

    def _pos_table(self, x, grid):
        table = self.pos_embed[...]
        expected = table.shape[1] - (self.config.num_prefix_tokens if self.config.pos_embed == "learned" else 0)
        if grid[0] * grid[1] != expected:
            raise ValueError(f"images give a {grid[0]}x{grid[1]} patch grid but the position embedding has "
                             f"{expected} patch positions; build the model with img_size matching the images")
        return table.astype(x.dtype)

    def _pool(self, x):
        c = self.config
        if c.global_pool == "avg":
            return x[:, c.num_prefix_tokens:].mean(axis=1)
        if c.distilled:
            return (x[:, 0] + x[:, 1]) / 2
        return x[:, 0]

    def _logits(self, x, pooled, out):
        if self.head is None:
            return pooled
        if self.head_dist is None:
            return out.setdefault("head", self.head(pooled))
        # DeiT at inference: mean of the class-token and distillation-token heads
        out["head"], out["head_dist"] = self.head(x[:, 0]), self.head_dist(x[:, 1])
        return (out["head"] + out["head_dist"]) / 2

    def __call__(self, images: jax.Array, train: bool = False):
        out = {}
        x, grid = self.patch_embed(images)
        out["patch_embed"] = x
        x, rotary = self._embed(x, grid)
        out["pos_embed"] = x
        if self.norm_pre is not None:
            x = out["norm_pre"] = self.norm_pre(x)
        for i, block in enumerate(self.blocks):
            x = out[f"blocks.{i}"] = block(x, out, f"blocks.{i}", rotary)
        x = out["norm"] = self.norm(x)
        pooled = out["pre_logits"] = self._pool(x)
        return self._logits(x, pooled, out), out


def candidate_layers(depth: int) -> tuple[str, ...]:
    """Every block output (the full token sequence, :func:`token_layout`), then the pooled ``pre_logits``."""
    return (*(f"blocks.{i}" for i in range(depth)), "pre_logits")


def build(variant: str, rngs: nnx.Rngs, num_classes: int | None = None, **overrides) -> VisionTransformer:
    """Randomly initialised ViT ``variant`` ("S/16", "B/32", ... or a ``vit_flex:...`` name); ``overrides``
    replace config fields (``distilled``, ``num_reg_tokens``, ``pos_embed``, ...)."""
    sizes = decode_flex(variant) if variant.startswith(FLEX_PREFIX) else decode_variant(variant)
    fields = {**sizes, "num_classes": 1000, **overrides}
    if num_classes is not None:
        fields["num_classes"] = num_classes
    return VisionTransformer(ViTConfig(**fields), rngs=rngs)


def load_weights(model: VisionTransformer, path: str | os.PathLike, layout: str = "timm") -> None:
    """Load a ViT checkpoint (.safetensors, or .pth/.bin with torch) in place. ``layout``: "timm", "timm_eva",
    "torchvision", "openai_clip", "meta_dinov2" (:mod:`jaxbrain.models.vit_layouts`; the last two are also
    recognised under "timm"); a position table on another patch grid is resized as timm does."""
    vit_layouts.load(model, path, layout)


def _preprocessing(resize, crop, mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD, interpolation="bicubic"):
    return registry.Preprocessing(resize=resize, crop=crop, mean=mean, std=std, interpolation=interpolation)


# Each entry follows the default pretrained tag of the timm (or torchvision) model named in the comment:
# resize = floor(crop / crop_pct).
_VIT_PRE = _preprocessing(248, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # augreg: crop_pct 0.9
_DEIT_PRE = _preprocessing(256, 224)  # crop_pct 0.875
_DEIT_DISTILLED_PRE = _preprocessing(248, 224)  # crop_pct 0.9
_TORCHVISION_PRE = _preprocessing(256, 224, interpolation="bilinear")  # IMAGENET1K_V1 transforms
_DINOV2_PRE = _preprocessing(256, 224)  # DINOv2's linear-probe eval; checkpoints' 37x37 grid resized to 16x16
_DINOV3_PRE = _preprocessing(256, 256)  # timm: 256 px, crop_pct 1.0
_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
_CLIP_PRE = _preprocessing(248, 224, _CLIP_MEAN, _CLIP_STD)  # timm's openai tags: crop_pct 0.9

_IMAGENET_1K = 1_281_167.0
_DISTILLED = {"distilled": True}
_DINOV2 = {"layer_scale": 1e-5, "num_classes": 0}
_DINOV2_REG4 = {**_DINOV2, "num_reg_tokens": 4, "pos_embed": "learned_patches"}
_DINOV3 = {"layer_scale": 1e-5, "num_classes": 0, "num_reg_tokens": 4, "pos_embed": "rope", "qkv_bias": False,
           "norm_eps": 1e-5, "global_pool": "avg"}
_CLIP = {"pre_norm": True, "act": "quick_gelu", "norm_eps": 1e-5, "patch_bias": False}

# registry name: (variant, preprocessing, pretraining samples, config overrides, checkpoint layout)
MODELS = {
    "vit_ti16": ("Ti/16", _VIT_PRE, None, {}, "timm"),
    "vit_s16": ("S/16", _VIT_PRE, None, {}, "timm"),
    "vit_b16": ("B/16", _VIT_PRE, None, {}, "timm"),
    "vit_l16": ("L/16", _VIT_PRE, None, {}, "timm"),
    "vit_s32": ("S/32", _VIT_PRE, None, {}, "timm"),
    "vit_b32": ("B/32", _VIT_PRE, None, {}, "timm"),
    "vit_l32": ("L/32", _VIT_PRE, None, {}, "timm"),
    "vit_h14": ("H/14", _VIT_PRE, None, {}, "timm"),
    "deit_ti16": ("Ti/16", _DEIT_PRE, _IMAGENET_1K, {}, "timm"),
    "deit_s16": ("S/16", _DEIT_PRE, _IMAGENET_1K, {}, "timm"),
    "deit_b16": ("B/16", _DEIT_PRE, _IMAGENET_1K, {}, "timm"),
    # deit_{tiny,small,base}_distilled_patch16_224
    "deit_ti16_distilled": ("Ti/16", _DEIT_DISTILLED_PRE, _IMAGENET_1K, _DISTILLED, "timm"),
    "deit_s16_distilled": ("S/16", _DEIT_DISTILLED_PRE, _IMAGENET_1K, _DISTILLED, "timm"),
    "deit_b16_distilled": ("B/16", _DEIT_DISTILLED_PRE, _IMAGENET_1K, _DISTILLED, "timm"),
    # torchvision.models.vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14
    "tv_vit_b16": ("B/16", _TORCHVISION_PRE, _IMAGENET_1K, {}, "torchvision"),
    "tv_vit_b32": ("B/32", _TORCHVISION_PRE, _IMAGENET_1K, {}, "torchvision"),
    "tv_vit_l16": ("L/16", _TORCHVISION_PRE, _IMAGENET_1K, {}, "torchvision"),
    "tv_vit_l32": ("L/32", _TORCHVISION_PRE, _IMAGENET_1K, {}, "torchvision"),
    # vit_{small,base,large}_patch14_dinov2 and _reg4_dinov2 (LVD-142M)
    "dinov2_s14": ("S/14", _DINOV2_PRE, 142e6, _DINOV2, "timm"),
    "dinov2_b14": ("B/14", _DINOV2_PRE, 142e6, _DINOV2, "timm"),
    "dinov2_l14": ("L/14", _DINOV2_PRE, 142e6, _DINOV2, "timm"),
    "dinov2_s14_reg4": ("S/14", _DINOV2_PRE, 142e6, _DINOV2_REG4, "timm"),
    "dinov2_b14_reg4": ("B/14", _DINOV2_PRE, 142e6, _DINOV2_REG4, "timm"),
    "dinov2_l14_reg4": ("L/14", _DINOV2_PRE, 142e6, _DINOV2_REG4, "timm"),
    # vit_{small,base,large}_patch16_dinov3 (LVD-1689M), timm's Eva class
    "dinov3_s16": ("S/16", _DINOV3_PRE, 1689e6, _DINOV3, "timm_eva"),
    "dinov3_b16": ("B/16", _DINOV3_PRE, 1689e6, _DINOV3, "timm_eva"),
    "dinov3_l16": ("L/16", _DINOV3_PRE, 1689e6, _DINOV3, "timm_eva"),
    # vit_base_patch32_clip_quickgelu_224.openai and relatives (image tower, 400M pairs); logits = embedding
    "clip_b32": ("B/32", _CLIP_PRE, 400e6, {**_CLIP, "num_classes": 512}, "timm"),
    "clip_b16": ("B/16", _CLIP_PRE, 400e6, {**_CLIP, "num_classes": 512}, "timm"),
    "clip_l14": ("L/14", _CLIP_PRE, 400e6, {**_CLIP, "num_classes": 768}, "timm"),
}

# A default width x depth grid registered at import (heads = width / 64); the paper's exact flex points are
# not tabulated here, and any other point is one flex_spec call (docs/method.md, "Vision transformer variants").
FLEX_WIDTHS = (192, 384, 768)
FLEX_DEPTHS = (1, 2, 3, 4, 6, 8, 10, 12)


def flex_name(width: int, depth: int, heads: int | None = None, patch: int = 16) -> str:
    """The registry name of a flex ViT, e.g. ``flex_name(384, 6) == 'vit_flex:d384:L6:h6:p16'``."""
    return f"{FLEX_PREFIX}:d{width}:L{depth}:h{heads or max(width // 64, 1)}:p{patch}"


# registry name -> (objective, pretraining dataset) of the published weights, where not supervised ImageNet
_OBJECTIVES = {"dinov2": ("SSL", "LVD-142M"), "dinov3": ("SSL", "LVD-1689M"), "clip": ("image-language", "WIT-400M")}


def _family(name: str, variant: str, pre, samples, overrides: dict, layout: str) -> registry.Family:
    """One registry entry of MODELS as a family of its own (they differ in preprocessing, fields and layout)."""
    fields = {"img_size": pre.crop, **overrides}
    default_classes = fields.pop("num_classes", 1000)
    objective, dataset = _OBJECTIVES.get(name.split("_")[0], ("SUP", "ImageNet-1k" if samples else ""))

    def build_variant(variant, rngs, num_classes=None):
        return build(variant, rngs, default_classes if num_classes is None else num_classes, **fields)

    return registry.Family(name=name, variants={name: variant}, build=build_variant,
                           layers=lambda v: candidate_layers(decode_variant(v)["depth"]), preprocessing=pre,
                           load_weights=functools.partial(load_weights, layout=layout), pretraining_samples=samples,
                           architecture="vit", objective=objective, dataset=dataset)


def _flex_layers(variant: str) -> tuple[str, ...]:
    return candidate_layers(decode_flex(f"{FLEX_PREFIX}:{variant}")["depth"])


def _flex_build(variant: str, rngs, num_classes=None):
    return build(f"{FLEX_PREFIX}:{variant}", rngs, 1000 if num_classes is None else num_classes,
                 img_size=_DEIT_PRE.crop)


def flex_spec(name: str) -> registry.ModelSpec:
    """The spec of any ``vit_flex:...`` name (trained DeiT-style on ImageNet); the same as ``registry.get``."""
    decode_flex(name)  # validates
    return registry.get(name)


FLEX = registry.Family(
    name=FLEX_PREFIX, flex=FLEX_PREFIX, architecture="vit", build=_flex_build, layers=_flex_layers,
    variants={flex_name(w, d): flex_name(w, d).partition(":")[2] for w in FLEX_WIDTHS for d in FLEX_DEPTHS},
    preprocessing=_DEIT_PRE, load_weights=functools.partial(load_weights, layout="timm"),
    dataset="ImageNet-1k")
FAMILIES = (*(_family(name, *entry) for name, entry in MODELS.items()), FLEX)
