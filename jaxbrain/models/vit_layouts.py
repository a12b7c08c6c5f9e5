"""Checkpoint layouts of Vision Transformers: key maps from jaxbrain's (timm) names, and position-grid resizing.

jaxbrain's ViT modules carry timm ``VisionTransformer`` names. Other layouts map each of those names to the key a
checkpoint uses:

* ``timm``: identity (ViT, DeiT incl. distilled, DINOv2 with and without registers, CLIP image towers).
* ``timm_eva``: timm's Eva class, which holds DINOv3: layer scales are ``blocks.N.gamma_1`` / ``gamma_2``.
* ``torchvision``: ``torchvision.models.vit_b_16`` and relatives: ``conv_proj``, ``class_token``,
  ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_N.{ln_1, self_attention.in_proj_weight/bias,
  self_attention.out_proj, ln_2, mlp.0, mlp.3}``, ``encoder.ln``, ``heads.head``. Its fused ``in_proj`` stacks
  q, k, v in the same order as timm's ``qkv``.

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

_RULES = {"timm": (), "timm_eva": _EVA_RULES, "torchvision": _TORCHVISION_RULES}
_POS_KEYS = {"timm": "pos_embed", "timm_eva": "pos_embed", "torchvision": "encoder.pos_embedding"}
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


def load(model, path: str | os.PathLike, layout: str = "timm") -> None:
    """Load a ViT checkpoint of ``layout`` into ``model`` in place, all or nothing (errors name every key)."""
    rename = renamer(layout)
    state_dict = convert.strip_prefix(convert.read_state_dict(path), "module.")
    state_dict = resize_position_table(state_dict, _POS_KEYS[layout], model)
    convert.load_state_dict(model, state_dict, source=os.fspath(path), rename=rename)


def export(model, layout: str = "timm") -> dict[str, np.ndarray]:
    """``model`` as a state dict with the keys of ``layout`` (inverse of :func:`load` at the model's grid)."""
    return convert.to_state_dict(model, rename=renamer(layout))
