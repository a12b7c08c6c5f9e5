"""Checkpoint layouts of Vision Transformers: key maps from jaxbrain's (timm) names, and position-grid resizing.

jaxbrain's ViT modules carry timm ``VisionTransformer`` names. Other layouts map each of those names to the key a
checkpoint uses:

* ``timm``: identity (ViT, DeiT incl. distilled, DINOv2 with and without registers, CLIP image towers).
* ``timm_eva``: timm's Eva class, which holds DINOv3: layer scales are ``blocks.N.gamma_1`` / ``gamma_2``.
* ``torchvision``: ``torchvision.models.vit_b_16`` and relatives: ``conv_proj``, ``class_token``,
  ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_N.{ln_1, self_attention.in_proj_weight/bias,
  self_attention.out_proj, ln_2, mlp.0, mlp.3}``, ``encoder.ln``, ``heads.head``. Its fused ``in_proj`` stacks
  q, k, v in the same order as timm's ``qkv``.

Two more layouts are the authors' original releases, converted to timm's keys on load (load only):

* ``openai_clip``: OpenAI's CLIP state dict (``visual.conv1``, ``visual.class_embedding``,
  ``visual.positional_embedding``, ``visual.ln_pre``, ``visual.transformer.resblocks.N.{ln_1, attn.in_proj_*,
  attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``, ``visual.ln_post``, ``visual.proj``); the text tower is ignored;
  ``proj`` (x @ proj) becomes a head without bias (zero bias).
* ``meta_dinov2``: facebookresearch/dinov2 (``mask_token`` dropped; with ``register_tokens``, whose position
  table also covers the class token, the class position is folded into ``cls_token`` and the table keeps the
  patches, as timm's registers variant expects).

A checkpoint whose learned position table was trained on another patch grid (DINOv2 at 518 px loaded at 224 px)
is resized with timm's antialiased bicubic (:mod:`jaxbrain.models.pos_embed`) before loading, as timm does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import numpy as np

from jaxbrain.models import convert, pos_embed

_TORCHVISION_RULES = (
    (r"^patch_embed\.proj\.", "conv_proj."),
    (r"^cls_token$", "class_token"),
    (r"^pos_embed$", "encoder.pos_embedding"),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.encoder_layer_\1.ln_1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.encoder_layer_\1.ln_2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"encoder.layers.encoder_layer_\1.self_attention.in_proj_\2"),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.encoder_layer_\1.self_attention.out_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"encoder.layers.encoder_layer_\1.mlp.0."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"encoder.layers.encoder_layer_\1.mlp.3."),
    (r"^norm\.", "encoder.ln."),
    (r"^head\.", "heads.head."),
)

_EVA_RULES = ((r"^blocks\.(\d+)\.ls([12])\.gamma$", r"blocks.\1.gamma_\2"),)

_OPENAI_CLIP_SWAPS = (("conv1", "patch_embed.proj"), ("positional_embedding", "pos_embed"),
                      ("transformer.resblocks.", "blocks."), ("ln_pre", "norm_pre"), ("ln_post", "norm"),
                      ("ln_", "norm"), ("in_proj_", "qkv."), ("out_proj", "proj"), ("mlp.c_fc", "mlp.fc1"),
                      ("mlp.c_proj", "mlp.fc2"))


def _from_openai_clip(state_dict: dict) -> dict:
    out = {}
    for key, value in state_dict.items():
        if not key.startswith("visual."):
            continue  # text tower, logit scale
        key = key[len("visual."):]
        for old, new in _OPENAI_CLIP_SWAPS:
            key = key.replace(old, new)
        value = np.asarray(value)
        if key == "proj":
            out["head.weight"], out["head.bias"] = value.T, np.zeros(value.shape[1], value.dtype)
            continue
        if key == "class_embedding":
            key, value = "cls_token", value[None, None]
        elif key == "pos_embed":
            value = value[None]
        out[key] = value
    return out


def _from_meta_dinov2(state_dict: dict) -> dict:
    out = {k: np.asarray(v) for k, v in state_dict.items() if k != "mask_token"}
    if "register_tokens" in out:
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return out


_RULES = {"timm": (), "timm_eva": _EVA_RULES, "torchvision": _TORCHVISION_RULES, "openai_clip": (),
          "meta_dinov2": ()}
_CONVERTERS = {"openai_clip": _from_openai_clip, "meta_dinov2": _from_meta_dinov2}
_POS_KEYS = {"torchvision": "encoder.pos_embedding"}
LAYOUTS = tuple(_RULES)


def renamer(layout: str) -> Callable[[str], str]:
    """The function mapping a jaxbrain (timm) parameter name to the key used by checkpoints of ``layout``."""
    if layout not in _RULES:
        raise ValueError(f"unknown ViT checkpoint layout {layout!r}; known: {', '.join(LAYOUTS)}")
    rules = tuple((re.compile(pattern), repl) for pattern, repl in _RULES[layout])

    def rename(name: str) -> str:
        for pattern, repl in rules:
            new, n = pattern.subn(repl, name)
            if n:
                return new
        return name

    return rename


def resize_position_table(state_dict: dict, key: str, model) -> dict:
    """Resample ``state_dict[key]`` to the model's patch grid when the grids differ (timm's rule)."""
    if key not in state_dict or model.pos_embed is None:
        return state_dict
    config = model.config
    n_prefix = config.num_prefix_tokens if config.pos_embed == "learned" else 0
    table = np.asarray(state_dict[key])
    if table.ndim == 2:  # some exports drop the leading batch axis
        table = table[None]
    side = config.img_size // config.patch_size
    if table.shape[1] == n_prefix + side * side:
        return state_dict
    resized = pos_embed.resample_abs_pos_embed(table, (side, side), num_prefix_tokens=n_prefix)
    return {**state_dict, key: resized}


def detect_original(state_dict: dict, layout: str) -> str:
    """``layout``, or the authors' original layout when a "timm" checkpoint is recognisably one (timm's rule:
    ``visual.class_embedding`` is OpenAI CLIP, ``mask_token`` is facebookresearch DINOv2)."""
    if layout == "timm" and "visual.class_embedding" in state_dict:
        return "openai_clip"
    if layout == "timm" and "mask_token" in state_dict:
        return "meta_dinov2"
    return layout


def load(model, path: str | os.PathLike, layout: str = "timm") -> None:
    """Load a ViT checkpoint of ``layout`` into ``model`` in place, all or nothing (errors name every key).
    OpenAI CLIP and facebookresearch DINOv2 files are recognised under "timm" (:func:`detect_original`)."""
    state_dict = convert.strip_prefix(convert.read_state_dict(path), "module.")
    layout = detect_original(state_dict, layout)
    rename = renamer(layout)
    if layout in _CONVERTERS:
        state_dict = _CONVERTERS[layout](state_dict)
    state_dict = resize_position_table(state_dict, _POS_KEYS.get(layout, "pos_embed"), model)
    convert.load_state_dict(model, state_dict, source=os.fspath(path), rename=rename)


def export(model, layout: str = "timm") -> dict[str, np.ndarray]:
    """``model`` as a state dict with the keys of ``layout`` (inverse of :func:`load` at the model's grid)."""
    if layout in _CONVERTERS:
        raise ValueError(f"layout {layout!r} is load-only; export to 'timm' and convert with the authors' tools")
    return convert.to_state_dict(model, rename=renamer(layout))
