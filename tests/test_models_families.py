"""ViT/DeiT, ResNet and ConvNeXt: the forward contract, size tables, registry entries, parameter counts, FLOPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbrain.models import convnext, registry, resnet, vit


def _forward(model, images, train=False):
    """One compiled forward (op-by-op dispatch compiles every op separately and is slower)."""
    return nnx.jit(lambda m, x: m(x, train=train))(model, images)


def _tiny_vit(**kw):
    return vit.VisionTransformer(vit.ViTConfig(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=8, img_size=32,
                                               num_classes=5, **kw), rngs=nnx.Rngs(0))


def _tiny_resnet(block="bottleneck"):
    return resnet.ResNet(resnet.ResNetConfig(block=block, layers=(1, 2, 1, 1), width=8, num_classes=5),
                         rngs=nnx.Rngs(0))


def _tiny_convnext():
    return convnext.ConvNeXt(convnext.ConvNeXtConfig(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=5),
                             rngs=nnx.Rngs(0))


def test_vit_forward_names_every_block_and_substep():
    model = _tiny_vit()
    logits, out = _forward(model, jnp.ones((3, 32, 32, 3)))
    assert logits.shape == (3, 5)
    for i in range(2):
        for sub in ("", ".norm1", ".attn", ".norm2", ".mlp"):
            assert out[f"blocks.{i}{sub}"].shape == (3, 1 + 16, 32)
    assert out["patch_embed"].shape == (3, 16, 32)
    assert out["pre_logits"].shape == (3, 32)
    # The block output is the residual stream: input + attn, then + mlp.
    np.testing.assert_allclose(out["blocks.1"], out["blocks.0"] + out["blocks.1.attn"] + out["blocks.1.mlp"],
                               rtol=1e-5, atol=1e-5)


def test_resnet_forward_names_every_block():
    for block in ("basic", "bottleneck"):
        model = _tiny_resnet(block)
        logits, out = _forward(model, jnp.ones((2, 64, 64, 3)))
        expansion = 4 if block == "bottleneck" else 1
        assert logits.shape == (2, 5)
        assert out["maxpool"].shape == (2, 16, 16, 8)
        assert out["layer2.1"].shape == (2, 8, 8, 16 * expansion)
        assert out["layer4.0"].shape == (2, 2, 2, 64 * expansion)
        assert out["layer2.0.downsample"].shape == out["layer2.0"].shape
        assert out["avgpool"].shape == (2, 64 * expansion)


def test_convnext_forward_names_every_block():
    model = _tiny_convnext()
    logits, out = _forward(model, jnp.ones((2, 64, 64, 3)))
    assert logits.shape == (2, 5)
    assert out["stem"].shape == (2, 16, 16, 8)
    assert out["stages.2.blocks.1"].shape == (2, 4, 4, 24)
    assert out["stages.2.blocks.1.conv_dw"].shape == (2, 4, 4, 24)
    assert out["stages.3.downsample"].shape == (2, 2, 2, 32)
    assert out["head.norm"].shape == (2, 32)


def test_resnet_train_mode_updates_batch_stats_only_when_training():
    model = _tiny_resnet("basic")
    before = np.asarray(model.bn1.mean[...]).copy()
    _forward(model, jnp.ones((2, 32, 32, 3)) * 2.0)
    np.testing.assert_array_equal(model.bn1.mean[...], before)
    _forward(model, jax.random.normal(jax.random.key(0), (2, 32, 32, 3)) + 2.0, train=True)
    assert not np.array_equal(model.bn1.mean[...], before)


@pytest.mark.parametrize(
    "variant, expected",
    [("S/16", (384, 12, 1536, 6, 16)), ("B/32", (768, 12, 3072, 12, 32)), ("L/16", (1024, 24, 4096, 16, 16)),
     ("Ti/16", (192, 12, 768, 3, 16))],
)
def test_vit_size_table(variant, expected):
    v = vit.decode_variant(variant)
    assert (v["width"], v["depth"], v["mlp_dim"], v["num_heads"], v["patch_size"]) == expected


def test_bad_variants_are_clear_errors():
    with pytest.raises(ValueError, match="unknown ViT variant 'X/16'"):
        vit.decode_variant("X/16")
    with pytest.raises(ValueError, match="unknown ResNet variant '19'"):
        resnet.decode_variant("19")
    with pytest.raises(ValueError, match="unknown ConvNeXt variant 'XL'"):
        convnext.decode_variant("XL")


# Published parameter counts (torchvision model cards; timm model cards / the papers).
PUBLISHED_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "vit_ti16": 5_717_416,
    "vit_s16": 22_050_664,
    "vit_b16": 86_567_656,
    "vit_b32": 88_224_232,
    "vit_l16": 304_326_632,
    "deit_s16": 22_050_664,
    "convnext_t": 28_589_128,
    "convnext_s": 50_223_688,
    "convnext_b": 88_591_464,
    "convnext_l": 197_767_336,
}


# Large models take seconds each just to trace; they run with -m slow.
_SLOW = {"resnet101", "resnet152", "vit_l16", "vit_b32", "convnext_s", "convnext_b", "convnext_l", "resnet34"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in sorted(PUBLISHED_PARAMS)]
)
def test_param_count_and_layers(name):
    spec = registry.get(name)
    abstract = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0)))
    assert registry.param_count(abstract) == PUBLISHED_PARAMS[name]
    size = spec.preprocessing.crop
    _, out = nnx.eval_shape(lambda m: m(jnp.zeros((1, size, size, 3))), abstract)
    assert set(spec.layers) <= set(out)
    assert len(spec.depths) == len(spec.layers)
    assert spec.depths[0] == 0.0 and spec.depths[-1] == 1.0
    assert all(a < b for a, b in zip(spec.depths, spec.depths[1:]))


def test_registry_names_cover_all_families():
    expected = {"vit_ti16", "vit_s16", "vit_b16", "vit_l16", "vit_b32", "deit_s16", "resnet18", "resnet34",
                "resnet50", "resnet101", "resnet152", "convnext_t", "convnext_s", "convnext_b", "convnext_l"}
    assert expected <= set(registry.names())
    assert registry.get("vit_s16").preprocessing.interpolation == "bicubic"
    assert registry.get("resnet50").preprocessing.crop == 224


def test_vit_flops_match_hand_count():
    """XLA's count for a small ViT against the matmul FLOPs written out (elementwise work adds a few percent)."""
    d, m, n = 128, 512, 17
    model = vit.VisionTransformer(vit.ViTConfig(width=d, depth=2, mlp_dim=m, num_heads=2, patch_size=8, img_size=32,
                                                num_classes=5), rngs=nnx.Rngs(0))
    spec = registry.ModelSpec(name="small_vit", family="vit", build=None, layers=("blocks.1",), depths=(1.0,),
                              preprocessing=registry.Preprocessing(32, 32, (0, 0, 0), (1, 1, 1)), load_weights=None)
    patch = 16 * (8 * 8 * 3) * d
    block = n * (3 * d * d + d * d + 2 * d * m) + 2 * n * n * d  # qkv, proj, mlp; q k^T and attn v
    macs = patch + 2 * block + d * 5
    flops = registry.forward_flops(spec, model)
    assert 2 * macs <= flops <= 2 * macs * 1.15


def test_convnext_cpu_depthwise_path_equals_grouped_conv():
    """The shifted-product depthwise conv used on CPU equals the grouped convolution used on accelerators."""
    conv = nnx.Conv(6, 6, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=6, rngs=nnx.Rngs(0))
    conv.bias[...] = jnp.arange(6.0)
    x = jax.random.normal(jax.random.key(1), (2, 9, 9, 6))
    np.testing.assert_allclose(convnext.depthwise_conv(conv, x), conv(x), rtol=1e-5, atol=1e-5)
