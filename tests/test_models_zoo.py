"""The model zoo: the family contract, published sizes and FLOPs, flex names, the forward contract of the CNN
families (AlexNet, EfficientNet, CORnet-S, torchvision ConvNeXt, flex ResNet/ConvNeXt), and one score run."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.common import model_label
from jaxbrain import launch, results
from jaxbrain.models import convnext, efficientnet, flops, layers, registry, resnet

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Published parameter counts and multiply-adds per 224 px image (B1: 240 px, B2: 288 px):
#   torchvision model cards ("num_params", "GFLOPS" = GMACs; torchvision.models.*_Weights.IMAGENET1K_V1.meta):
#   AlexNet 61,100,840 / 0.714; EfficientNet-B0 5,288,548 / 0.386, B1 7,794,184 / 0.687, B2 9,109,994 / 1.088;
#   ResNet-18 11,689,512 / 1.814; ResNet-50 25,557,032 / 4.089; ConvNeXt-T 28,589,128 / 4.456.
#   CORnet-S: 53.4 M parameters (Kubilius et al. 2019, NeurIPS, Table 1; no MAC count given there).
PUBLISHED = {
    "alexnet": (61_100_840, 0.714e9),
    "efficientnet_b0_tv": (5_288_548, 0.386e9),
    "efficientnet_b1_tv": (7_794_184, 0.687e9),
    "efficientnet_b2_tv": (9_109_994, 1.088e9),
    "efficientnet_b0": (5_288_548, 0.386e9),  # timm's B0: same network and input size
    "resnet18": (11_689_512, 1.814e9),
    "resnet50": (25_557_032, 4.089e9),
    "convnext_t_tv": (28_589_128, 4.456e9),
    "cornet_s": (53.4e6, None),
    "resnet_flex:w1:d3-4-6-3:bottleneck": (25_557_032, 4.089e9),
    "convnext_flex:w1:d3-3-9-3": (28_589_128, 4.456e9),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_params_and_dense_flops_within_two_percent_of_published(name):
    params, macs = PUBLISHED[name]
    spec = registry.get(name)
    abstract = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0)))
    assert registry.param_count(abstract) == pytest.approx(params, rel=0.02)
    if macs is not None:
        assert registry.forward_flops(spec, abstract, convention="dense") == pytest.approx(2 * macs, rel=0.02)


def test_xla_counts_two_flops_per_multiply_add_but_skips_padding():
    """A 3x3 'SAME' conv, 8x8x3 -> 8x8x4: dense = 2 x 8*8*4*27 MACs; XLA counts only taps inside the image."""
    conv = nnx.Conv(3, 4, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, rngs=nnx.Rngs(0))

    class Net(nnx.Module):
        def __init__(self):
            self.conv = conv

        def __call__(self, x, train=False):
            return jnp.sum(self.conv(x), axis=(1, 2)), {}

    spec = registry.ModelSpec(name="one_conv", family="test", build=None, layers=("x",), depths=(1.0,),
                              preprocessing=registry.Preprocessing(8, 8, (0, 0, 0), (1, 1, 1)), load_weights=None)
    dense_macs = 8 * 8 * 4 * 3 * 3 * 3
    inside_taps = (3 * 8 - 2) ** 2  # per output channel and input channel: taps that land inside the image
    assert registry.forward_flops(spec, Net(), convention="dense") == 2 * dense_macs
    xla = registry.forward_flops(spec, Net(), convention="xla")
    assert 2 * inside_taps * 3 * 4 <= xla <= 2 * inside_taps * 3 * 4 + 2 * 8 * 8 * 4  # + the sum's additions
    with pytest.raises(ValueError, match="unknown FLOP convention 'fvcore'"):
        registry.forward_flops(spec, Net(), convention="fvcore")


def test_dense_count_sees_the_cpu_depthwise_rewrite_as_a_convolution():
    conv = nnx.Conv(6, 6, (7, 7), strides=2, padding=((3, 3), (3, 3)), feature_group_count=6, rngs=nnx.Rngs(0))

    class Net(nnx.Module):
        def __init__(self):
            self.conv = conv

        def __call__(self, x, train=False):
            x = jnp.concatenate([x, x], axis=-1)  # 6 channels
            return jnp.mean(convnext.depthwise_conv(self.conv, x), axis=(1, 2)), {}

    assert flops.dense_flops(Net(), 16) == 2 * (8 * 8 * 6 * 49)


@pytest.mark.parametrize("batch", [2, 10, 16])  # 16: the path that goes a few images at a time
def test_strided_cpu_depthwise_conv_equals_grouped_conv(batch):
    conv = nnx.Conv(5, 5, (5, 5), strides=2, padding=((2, 2), (2, 2)), feature_group_count=5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (batch, 11, 11, 5))
    ours = nnx.jit(convnext.depthwise_conv)(conv, x)
    np.testing.assert_allclose(ours, nnx.jit(lambda c, x: c(x))(conv, x), rtol=1e-5, atol=1e-5)


def test_cpu_depthwise_conv_takes_a_batch_split_over_the_mesh():
    """A global batch sharded over the data axis (a jitted logits forward, a training step) is not cut into
    blocks (``lax.map`` refuses a sharded leading axis); the result is the grouped conv's."""
    from jaxbrain import sharding
    conv = nnx.Conv(5, 5, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=5, rngs=nnx.Rngs(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (16, 6, 6, 5)))
    mesh = sharding.data_mesh()
    ours = nnx.jit(convnext.depthwise_conv)(conv, sharding.global_batch(x, mesh))
    np.testing.assert_allclose(ours, nnx.jit(lambda c, x: c(x))(conv, x), rtol=1e-5, atol=1e-5)


# Every new registry name but the large EfficientNets and ConvNeXts (seconds each just to trace).
NEW_NAMES = ("alexnet", "cornet_s", "efficientnet_b0", "efficientnet_b2", "efficientnet_b0_tv", "efficientnet_b2_tv",
             "convnext_t_tv")


def test_new_registry_names_name_their_candidate_layers():
    """Shapes only (no compute, plain convolutions for fast tracing): each variant's forward has its layers."""
    for name in NEW_NAMES:
        spec = registry.get(name)
        with layers.native_ops():
            _, out = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0))(jnp.zeros((1, 64, 64, 3))))
        assert set(spec.layers) <= set(out), (name, sorted(set(spec.layers) - set(out)))
        assert spec.depths[0] == 0.0 and spec.depths[-1] == 1.0
        assert list(spec.depths) == sorted(set(spec.depths))


def _tiny(name):
    """Each family at its smallest: full AlexNet and CORnet-S (fixed widths), narrow shallow others."""
    if name == "efficientnet":
        config = efficientnet.EfficientNetConfig(width_mult=0.25, depth_mult=0.3, dropout=0.2, num_classes=7)
        return efficientnet.EfficientNet(config, rngs=nnx.Rngs(0)), efficientnet.candidate_layers(config)
    if name == "convnext_tv":
        config = convnext.ConvNeXtConfig(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=7,
                                         layout="torchvision")
        return convnext.ConvNeXt(config, rngs=nnx.Rngs(0)), convnext.candidate_layers((1, 1, 2, 1), "torchvision")
    spec = registry.get(name)
    return spec.build(nnx.Rngs(0), num_classes=7), spec.layers


@pytest.mark.parametrize("name", ["alexnet", "cornet_s", "efficientnet", "convnext_tv", "resnet_flex:w0.25:d1-2-1-1",
                                  "convnext_flex:w0.125:d1-1-2-1"])
def test_forward_returns_every_candidate_layer(name):
    model, names = _tiny(name)
    images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    logits, out = nnx.jit(lambda m, x: m(x, train=False))(model, images)
    assert logits.shape == (2, 7)
    missing = [layer for layer in names if layer not in out]
    assert not missing, missing
    assert all(bool(jnp.all(jnp.isfinite(out[layer]))) for layer in names)


@pytest.mark.parametrize("name", ["alexnet", "efficientnet"])
def test_train_mode_draws_dropout_and_updates_batch_norm(name):
    model, _ = _tiny(name)
    images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3)) + 1.0

    def stats():
        return [np.array(leaf) for leaf in jax.tree_util.tree_leaves(nnx.state(model, nnx.BatchStat))]

    stats_before = stats()
    step = nnx.jit(lambda m, x: m(x, train=True)[0])
    assert not np.allclose(step(model, images), step(model, images))  # fresh dropout masks each call
    # every batch norm (if any) moved its running statistics
    assert all(not np.array_equal(a, b) for a, b in zip(stats_before, stats()))


def test_flex_names_decode_width_and_depth():
    assert resnet.decode_flex("w0.5:d1-1-1-1") == {"block": "basic", "layers": (1, 1, 1, 1), "width": 32}
    assert resnet.decode_flex("d3-4-6-3:bottleneck:w2") == {"block": "bottleneck", "layers": (3, 4, 6, 3),
                                                             "width": 128}
    assert convnext.decode_flex("w0.5:d2-2-6-2") == {"depths": (2, 2, 6, 2), "dims": (48, 96, 192, 384)}
    spec = registry.get("resnet_flex:w0.5:d1-1-1-1")
    assert spec.family == "resnet_flex" and spec.variant == "w0.5:d1-1-1-1"
    assert spec.layers == ("maxpool", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "avgpool")
    assert registry.get("resnet_flex:w0.5:d1-1-1-1") is spec
    model = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0)))
    assert model.conv1.kernel.shape == (7, 7, 3, 32) and model.fc.kernel.shape == (256, 1000)


@pytest.mark.parametrize("name, message", [
    ("resnet_flex:w0:d1-1-1-1", "bad ResNet flex variant 'w0:d1-1-1-1' at 'w0'"),
    ("resnet_flex:d1-1-1", "at 'd1-1-1'"),
    ("resnet_flex:x3", "at 'x3'"),
    ("convnext_flex:d1-0-1-1", "bad ConvNeXt flex variant 'd1-0-1-1' at 'd1-0-1-1'"),
])
def test_bad_flex_names_are_clear_errors(name, message):
    with pytest.raises(ValueError, match=message):
        registry.get(name)


def test_registry_contract():
    families = registry.families()
    assert {"alexnet", "efficientnet", "efficientnet_torchvision", "cornet", "convnext_torchvision", "resnet_flex",
            "convnext_flex", "resnet", "convnext", "cifar_resnet", "tiny_cnn"} <= set(families)
    names = set(registry.names())
    for family in families.values():
        for name, variant in family.variants.items():
            spec = registry.get(name)
            assert name in names and spec.variant == variant and spec.family == (family.architecture or family.name)
    assert {"alexnet", "efficientnet_b0", "efficientnet_b2_tv", "efficientnet_b7_tv", "cornet_s",
            "convnext_t_tv"} <= names
    assert registry.get("efficientnet_b2_tv").preprocessing.crop == 288
    assert registry.get("efficientnet_b2").preprocessing.crop == 256
    assert registry.get("efficientnet_b0").layers[:3] == ("bn1", "blocks.0.0", "blocks.1.0")
    assert registry.get("efficientnet_b0_tv").layers[:3] == ("features.0", "features.1.0", "features.2.0")
    assert registry.get("convnext_t_tv").preprocessing.resize == 236
    assert registry.get("cornet_s").layers[:3] == ("V1.output-t0", "V2.output-t0", "V2.output-t1")
    assert registry.known("resnet_flex:w0.5") and registry.known("alexnet")
    assert not registry.known("resnet_flex:w-1") and not registry.known("alexnet2")
    with pytest.raises(KeyError, match="flex names: convnext_flex:<variant>, resnet_flex:<variant>"):
        registry.get("resnet_flexx:w1")


def test_single_specs_still_register():
    spec = registry.ModelSpec(name="zoo_test_single", family="test", build=None, layers=("a", "b"),
                              depths=registry.normalised_depths(2),
                              preprocessing=registry.Preprocessing(8, 8, (0, 0, 0), (1, 1, 1)), load_weights=None)
    try:
        registry.register(spec)
        assert registry.get("zoo_test_single") is spec
        with pytest.raises(ValueError, match="already registered"):
            registry.register(registry.ModelSpec(**{**spec.__dict__}))
    finally:
        registry._REGISTRY.pop("zoo_test_single", None)


def test_convnext_torchvision_names():
    assert convnext.torchvision_path("stem.0.weight") == "features.0.0.weight"
    assert convnext.torchvision_path("stages.2.downsample.1.bias") == "features.4.1.bias"
    assert convnext.torchvision_path("stages.1.blocks.2.mlp.fc2.weight") == "features.3.2.block.5.weight"
    assert convnext.torchvision_path("stages.3.blocks.0.gamma") == "features.7.0.layer_scale"
    assert convnext.torchvision_path("stages.0.blocks.1.norm") == "features.1.1.block.2"
    assert convnext.torchvision_path("stages.0") == "features.1"
    assert convnext.torchvision_path("head.norm.weight") == "classifier.0.weight"


SCORED = ("alexnet", "efficientnet_b0", "cornet_s", "resnet_flex:w0.25:d1-1-1-1", "convnext_flex:w0.25:d1-1-1-1",
          "vit_flex:d64:L2:h2:p16", "dinov2_s14_reg4", "clip_b32")


def _scored_layers(name: str) -> tuple[str, ...]:
    if name == "alexnet":
        return ()  # every candidate layer
    layers = registry.get(name).layers
    return layers[-1:] if name in ("cornet_s", "dinov2_s14_reg4", "clip_b32") else layers[-2:]


def test_new_families_score_on_a_planted_benchmark(tmp_path):
    """The score experiment end to end with the new families: AlexNet with every candidate layer, the others with
    their last two (the large ones, CORnet-S and the DINOv2/CLIP towers, with their last); committed layers come
    from each model's own layers."""
    config = launch.load_config(str(ROOT / "configs/quickstart.py:scale=0.1,control=false"))
    with config.unlocked():
        config.benchmarks = ("planted_ephys",)
        config.progress = False
        config.n_bootstrap = 20
        config.models = {model_label(name): {"name": name, "weights": "", "seed": 0, "layers": _scored_layers(name)}
                         for name in SCORED}
    summary = launch.launch(config, tmp_path)
    table = results.read_table(tmp_path)
    cv = table[table.stage == "cv"]
    assert set(cv[cv.model == "alexnet"].layer) == set(registry.get("alexnet").layers)
    for name in SCORED:
        spec = registry.get(name)
        rois = summary[model_label(name)]["benchmarks"]["planted_ephys"]["rois"]
        assert set(rois) == {"V1", "V4", "IT"}
        assert all(entry["layer"] in spec.layers and np.isfinite(entry["r_nc"]) for entry in rois.values()), name
