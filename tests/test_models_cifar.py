"""CIFAR ResNets: published weights through the torch-free reader give the accuracy the data README reports."""

import io
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from jaxbrain.models import cifar_resnet, convert, registry, torch_pickle

PER_CLASS = 100


def _cifar_test_images(realdata):
    """First 100 JPEGs per class (sorted member order), RGB in [0, 1], normalised; labels 0..9."""
    folder = realdata / "cifar10_resnet_akamaster" / "cifar10_test_jpg"
    images, labels = [], []
    for path in sorted(folder.glob("test_*.zip")):
        label = int(path.name.split("_")[1])
        with zipfile.ZipFile(path) as zf:
            members = sorted(n for n in zf.namelist() if n.endswith(".jpg"))[:PER_CLASS]
            for member in members:
                images.append(np.asarray(Image.open(io.BytesIO(zf.read(member))).convert("RGB")))
                labels.append(label)
    x = np.stack(images).astype(np.float32) / 255.0
    pre = cifar_resnet.PREPROCESSING
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return x, np.asarray(labels)


@pytest.fixture(scope="module")
def cifar_test(realdata):
    return _cifar_test_images(realdata)


def _accuracy(model, x, y):
    forward = nnx.jit(lambda m, images: m(images)[0])
    logits = np.concatenate([np.asarray(forward(model, jnp.asarray(x[i:i + 500]))) for i in range(0, len(x), 500)])
    return float(np.mean(logits.argmax(axis=1) == y))


def _pretrained(name):
    spec = registry.get(name)
    model = spec.build(nnx.Rngs(0))
    spec.load_weights(model, cifar_resnet.default_checkpoint(name))
    return model


def test_resnet20_pretrained_accuracy_matches_reference(cifar_test):
    x, y = cifar_test
    assert x.shape == (10 * PER_CLASS, 32, 32, 3)
    # 80.4 % is the figure of an independent numpy forward pass on these lossy JPEGs (data README).
    assert _accuracy(_pretrained("cifar_resnet20"), x, y) == pytest.approx(0.804, abs=0.02)


def test_untrained_resnet20_is_near_chance(cifar_test):
    x, y = cifar_test
    model = registry.get("cifar_resnet20").build(nnx.Rngs(0))
    assert _accuracy(model, x, y) < 0.2


@pytest.mark.slow
def test_resnet56_pretrained_accuracy_matches_reference(cifar_test):
    x, y = cifar_test
    assert _accuracy(_pretrained("cifar_resnet56"), x, y) == pytest.approx(0.825, abs=0.02)


@pytest.mark.parametrize("name", ["cifar_resnet32", "cifar_resnet44"])
def test_other_depths_load_completely(realdata, name):
    model = _pretrained(name)
    state = torch_pickle.load(cifar_resnet.default_checkpoint(name))["state_dict"]
    exported = convert.to_state_dict(model)
    assert sorted(exported) == sorted(k.removeprefix("module.") for k in state)
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key.removeprefix("module.")], value)


def test_forward_contract_and_layers():
    spec = registry.get("cifar_resnet20")
    model = spec.build(nnx.Rngs(1))
    logits, out = model(jnp.zeros((2, 32, 32, 3)), train=False)
    assert logits.shape == (2, 10)
    assert set(spec.layers) <= set(out)
    assert spec.layers[0] == "relu" and spec.layers[-1] == "avgpool"
    assert len(spec.layers) == 1 + 9 + 1
    assert out["layer1.2"].shape == (2, 32, 32, 16)
    assert out["layer2.0"].shape == (2, 16, 16, 32)
    assert out["layer3.2"].shape == (2, 8, 8, 64)
    assert out["avgpool"].shape == (2, 64)
    assert spec.depths[0] == 0.0 and spec.depths[-1] == 1.0 and list(spec.depths) == sorted(spec.depths)
    assert spec.preprocessing.crop == 32 and spec.preprocessing.mean == (0.485, 0.456, 0.406)


def test_param_count_and_flops_match_hand_count():
    spec = registry.get("cifar_resnet20")
    model = spec.build(nnx.Rngs(0))
    # Hand count (He et al. 2016 report 0.27M): convs 3*3*(3*16 + 6*16*16 + 32*16 + 5*32*32 + 64*32 + 5*64*64),
    # BN scale+bias per conv output, linear 64*10 + 10.
    convs = 9 * (3 * 16 + 6 * 16 * 16 + 32 * 16 + 5 * 32 * 32 + 64 * 32 + 5 * 64 * 64)
    bn = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    assert registry.param_count(model) == convs + bn + 650
    # Multiply-adds of the convolutions and the classifier, 2 FLOPs each. XLA counts only kernel taps that land
    # inside the image (zero padding is free), so count valid taps per output row; BN, relu and adds come on top.
    def taps(size, stride):
        rows = sum(1 for i in range(size // stride) for k in (-1, 0, 1) if 0 <= i * stride + k < size)
        return rows * rows

    macs = (taps(32, 1) * (3 * 16 + 6 * 16 * 16) + taps(32, 2) * 32 * 16 + taps(16, 1) * 5 * 32 * 32
            + taps(16, 2) * 64 * 32 + taps(8, 1) * 5 * 64 * 64 + 64 * 10)
    flops = registry.forward_flops(spec, model, convention="xla")
    assert 2 * macs <= flops <= 2 * macs * 1.05


def test_train_mode_uses_batch_statistics():
    model = registry.get("cifar_resnet20").build(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3)) * 3.0 + 1.0
    _, out_train = model(x, train=True)
    bn = np.asarray(out_train["bn1"])
    np.testing.assert_allclose(bn.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)


def test_truncated_checkpoint_names_the_file(realdata, tmp_path):
    source = cifar_resnet.default_checkpoint("cifar_resnet20")
    cut = tmp_path / "resnet20-truncated.th"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size - 1000])
    model = registry.get("cifar_resnet20").build(nnx.Rngs(0))
    before = convert.to_state_dict(model)
    with pytest.raises(ValueError, match="resnet20-truncated.th.*truncated"):
        cifar_resnet.load_pretrained(model, cut)
    after = convert.to_state_dict(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_wrong_depth_checkpoint_lists_every_fault_and_loads_nothing(realdata):
    model = registry.get("cifar_resnet32").build(nnx.Rngs(0))
    before = convert.to_state_dict(model)
    with pytest.raises(convert.WeightLoadError) as info:
        cifar_resnet.load_pretrained(model, cifar_resnet.default_checkpoint("cifar_resnet20"))
    message = str(info.value)
    assert "resnet20-12fca82f.th" in message
    assert "missing" in message and "layer1.4.conv1.weight" in message and "layer3.3.bn2.running_var" in message
    after = convert.to_state_dict(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_missing_checkpoint_is_file_not_found(tmp_path):
    model = registry.get("cifar_resnet20").build(nnx.Rngs(0))
    with pytest.raises(FileNotFoundError, match="nope.th"):
        cifar_resnet.load_pretrained(model, tmp_path / "nope.th")


def test_unknown_model_lists_known_names():
    with pytest.raises(KeyError, match="cifar_resnet20"):
        registry.get("cifar_resnet21")
    assert {"cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56"} <= set(registry.names())
