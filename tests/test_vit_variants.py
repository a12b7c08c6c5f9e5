"""ViT variants without torch: parameter counts and FLOPs against published figures, flex names, token layout,
position-table resampling properties and clear errors."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbrain.models import pos_embed, registry, vit, vit_layouts

# Published parameter counts in millions (rounded as published) and image size they refer to.
# deit_small_distilled_patch16_224.fb_in1k and vit_small_patch14_reg4_dinov2.lvd142m: timm model cards;
# vit_b_16 / vit_b_32: torchvision model docs (exact); vit_s16: DeiT paper Table 1 / timm card (22.1);
# CLIP ViT-B/32 image tower with its 512-d projection: 87.8 M (Hugging Face card of the same timm architecture);
# DINOv2 ViT-S/14 at its 518 px training size: timm card 22.1.
PUBLISHED_PARAMS_M = {
    "vit_s16": (22.1, 224),
    "deit_s16_distilled": (22.4, 224),
    "tv_vit_b16": (86.567656, 224),
    "tv_vit_b32": (88.224232, 224),
    "clip_b32": (87.8, 224),
    "dinov2_s14": (22.1, 518),
    "dinov2_s14_reg4": (22.1, 518),
}

# Published forward GMACs (multiply-adds of the matmuls incl. attention; FLOPs = 2 x MACs) at 224 px:
# DeiT paper Table 1 (DeiT-S 4.6), timm card of deit_small_distilled_patch16_224 (4.6), torchvision docs
# (vit_b_16 17.56, vit_b_32 4.41), CLIP paper (ViT-B/32 image encoder 4.4).
PUBLISHED_GMACS = {"vit_s16": 4.6, "deit_s16_distilled": 4.6, "tv_vit_b16": 17.56, "tv_vit_b32": 4.41,
                   "clip_b32": 4.4}


def _abstract(name, **overrides):
    spec = registry.get(name)
    variant, _, _, fields, _ = vit.MODELS[name]
    fields = {"img_size": spec.preprocessing.crop, **fields, **overrides}
    return nnx.eval_shape(lambda: vit.build(variant, nnx.Rngs(0), **fields))


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_param_count_within_two_percent_of_published(name):
    published, size = PUBLISHED_PARAMS_M[name]
    count = registry.param_count(_abstract(name, img_size=size))
    assert abs(count / 1e6 - published) <= 0.02 * published, (count, published)


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_forward_flops_against_published(name):
    """2 x multiply-adds of every matrix product (the paper's convention) within 2 % of the published MACs."""
    spec = registry.get(name)
    flops = registry.forward_flops(spec, nnx.eval_shape(lambda: spec.build(nnx.Rngs(0))))
    ratio = flops / (2e9 * PUBLISHED_GMACS[name])
    assert 0.98 <= ratio <= 1.02, ratio


def test_flex_names_decode_and_register():
    assert vit.decode_flex("vit_flex:d384:L6:h6:p16") == {"width": 384, "depth": 6, "num_heads": 6,
                                                          "patch_size": 16, "mlp_dim": 1536}
    assert vit.decode_flex("vit_flex:p8:h4:L3:d256:m512")["mlp_dim"] == 512
    assert vit.flex_name(384, 6) == "vit_flex:d384:L6:h6:p16"
    for width in vit.FLEX_WIDTHS:
        for depth in vit.FLEX_DEPTHS:
            assert vit.flex_name(width, depth) in registry.names()
    spec = vit.flex_spec("vit_flex:d96:L1:h3:p8")
    assert registry.get("vit_flex:d96:L1:h3:p8") is spec and vit.flex_spec("vit_flex:d96:L1:h3:p8") is spec
    assert spec.layers == ("blocks.0", "pre_logits")
    d, m, n = 96, 384, (224 // 8) ** 2 + 1
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
    expected = (8 * 8 * 3 * d + d) + d + n * d + block + 2 * d + (d * 1000 + 1000)
    assert registry.param_count(nnx.eval_shape(lambda: spec.build(nnx.Rngs(0)))) == expected


@pytest.mark.parametrize("bad", ["vit_flex:d384:L6:h6", "vit_flex:d384:L6:h5:p16", "vit_flex:d384:L6:h6:p16:x3",
                                 "vit_flex:d384:d384:L6:h6:p16", "vit_flex:dx:L6:h6:p16", "vitflex:d384:L6:h6:p16"])
def test_bad_flex_names_are_clear_errors(bad):
    with pytest.raises(ValueError, match="flex ViT"):
        vit.decode_flex(bad)


def test_token_layout_and_pooling():
    config = vit.ViTConfig(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=8, img_size=32, num_classes=0,
                           num_reg_tokens=4, pos_embed="learned_patches", layer_scale=0.1)
    layout = vit.token_layout(config)
    assert layout == {"class": slice(0, 1), "registers": slice(1, 5), "patches": slice(5, None)}
    model = vit.VisionTransformer(config, rngs=nnx.Rngs(0))
    assert model.pos_embed.shape == (1, 16, 32)
    logits, out = nnx.jit(lambda m, x: m(x))(model, jnp.ones((2, 32, 32, 3)))
    assert out["blocks.0"].shape == (2, 5 + 16, 32)
    np.testing.assert_array_equal(logits, out["norm"][:, 0])  # no head: logits are the class token
    distilled = vit.token_layout(vit.ViTConfig(32, 1, 64, 2, 8, distilled=True))
    assert distilled["distillation"] == slice(1, 2) and distilled["patches"] == slice(2, None)


def test_distilled_logits_average_both_heads():
    model = vit.VisionTransformer(vit.ViTConfig(32, 1, 64, 2, 8, img_size=32, num_classes=3, distilled=True),
                                  rngs=nnx.Rngs(0))
    model.head.kernel[...] = jnp.ones((32, 3))
    logits, out = nnx.jit(lambda m, x: m(x))(model, jnp.ones((2, 32, 32, 3)))
    np.testing.assert_allclose(logits, (out["head"] + out["head_dist"]) / 2, rtol=1e-6)
    assert not np.allclose(out["head"], out["head_dist"])


def test_bad_configs_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        vit.ViTConfig(32, 1, 64, 2, 8, pos_embed="sincos")
    with pytest.raises(ValueError, match="no register tokens"):
        vit.ViTConfig(32, 1, 64, 2, 8, distilled=True, num_reg_tokens=4)
    model = vit.VisionTransformer(vit.ViTConfig(32, 1, 64, 2, 8, img_size=32), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="5x5 patch grid"):
        model(jnp.ones((1, 40, 40, 3)))
    with pytest.raises(ValueError, match="unknown ViT checkpoint layout"):
        vit_layouts.renamer("keras")


def test_torchvision_key_map():
    rename = vit_layouts.renamer("torchvision")
    assert rename("blocks.3.attn.qkv.weight") == "encoder.layers.encoder_layer_3.self_attention.in_proj_weight"
    assert rename("blocks.3.mlp.fc2.bias") == "encoder.layers.encoder_layer_3.mlp.3.bias"
    assert rename("cls_token") == "class_token" and rename("head.weight") == "heads.head.weight"
    assert vit_layouts.renamer("timm_eva")("blocks.0.ls2.gamma") == "blocks.0.gamma_2"


def test_resampling_properties():
    """Equal sizes return the table unchanged; a constant grid stays constant (weights sum to one); prefix tokens
    are untouched; the 1-D weights of an integer downscale average neighbourhoods symmetrically."""
    table = np.random.default_rng(0).standard_normal((1, 1 + 36, 4)).astype(np.float32)
    assert pos_embed.resample_abs_pos_embed(table, (6, 6)) is table
    const = np.concatenate([table[:, :1], np.full((1, 36, 4), 0.7, np.float32)], axis=1)
    out = pos_embed.resample_abs_pos_embed(const, (9, 4))
    assert out.shape == (1, 1 + 36, 4)
    np.testing.assert_allclose(out[:, 1:], 0.7, rtol=1e-6)
    np.testing.assert_array_equal(out[:, :1], table[:, :1])
    w = pos_embed.antialiased_bicubic_matrix(8, 4)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(w[1], w[2][::-1], atol=1e-12)
    with pytest.raises(ValueError, match="not a 5x5 grid"):
        pos_embed.resample_abs_pos_embed(table, (4, 4), old_size=(5, 5))
