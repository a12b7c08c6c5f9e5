"""Checkpoint import/export: PyTorch layouts checked against float64 numpy forward passes written from the
PyTorch definitions (NCHW, OIHW kernels, y = x W^T + b), and the all-or-nothing error reporting."""

import pickle
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file
from scipy.special import erf

from jaxbrain.models import convert, convnext, resnet, vit


def _randomised_state_dict(model, seed=0):
    """The model's state dict with every tensor redrawn, so no value coincides with the model's own."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in convert.to_state_dict(model).items():
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        else:
            state[key] = (0.2 * rng.standard_normal(value.shape) + (1.0 if key.endswith("norm1.weight") else 0.0)
                          ).astype(np.float32)
    return state


def _forward(model, images):
    return nnx.jit(lambda m, x: m(x))(model, jnp.asarray(images))


# ---- float64 numpy transcriptions of the PyTorch modules ----

def _linear(x, sd, name):
    return x @ sd[f"{name}.weight"].astype(np.float64).T + sd[f"{name}.bias"]


def _layer_norm(x, sd, name, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _conv2d_nchw(x, weight, bias=None, stride=1, padding=0, groups=1):
    """torch.nn.functional.conv2d for NCHW input and OIHW weight."""
    n, c, h, w = x.shape
    o, i_per_group, kh, kw = weight.shape
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w + 2 * padding - kw) // stride + 1
    out = np.zeros((n, o, oh, ow))
    per_group = o // groups
    for g in range(groups):
        xs = x[:, g * i_per_group:(g + 1) * i_per_group]
        ws = weight[g * per_group:(g + 1) * per_group]
        for dy in range(kh):
            for dx in range(kw):
                patch = xs[:, :, dy:dy + stride * oh:stride, dx:dx + stride * ow:stride]
                out[:, g * per_group:(g + 1) * per_group] += np.einsum("nchw,oc->nohw", patch, ws[:, :, dy, dx])
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def _vit_reference(sd, images_nchw, heads, patch):
    x = _conv2d_nchw(images_nchw, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    x = x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1)
    cls = np.broadcast_to(sd["cls_token"], (x.shape[0], 1, x.shape[2]))
    x = np.concatenate([cls, x], axis=1) + sd["pos_embed"]
    n_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(n_blocks):
        p = f"blocks.{i}"
        y = _layer_norm(x, sd, f"{p}.norm1")
        b, n, d = y.shape
        qkv = _linear(y, sd, f"{p}.attn.qkv").reshape(b, n, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attn = scores / scores.sum(-1, keepdims=True)
        y = (attn @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
        x = x + _linear(y, sd, f"{p}.attn.proj")
        y = _layer_norm(x, sd, f"{p}.norm2")
        x = x + _linear(_gelu(_linear(y, sd, f"{p}.mlp.fc1")), sd, f"{p}.mlp.fc2")
    x = _layer_norm(x, sd, "norm")
    return _linear(x[:, 0], sd, "head")


def test_vit_loads_timm_layout_and_matches_numpy_transcription(tmp_path):
    config = vit.ViTConfig(width=32, depth=2, mlp_dim=64, num_heads=4, patch_size=8, img_size=32, num_classes=7)
    model = vit.VisionTransformer(config, rngs=nnx.Rngs(0))
    sd = _randomised_state_dict(model)
    path = tmp_path / "vit.safetensors"
    save_file(sd, path)
    vit.load_weights(model, path)
    images = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    logits, _ = _forward(model, images)
    sd64 = {k: v.astype(np.float64) for k, v in sd.items()}
    expected = _vit_reference(sd64, images.transpose(0, 3, 1, 2).astype(np.float64), heads=4, patch=8)
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_resnet_stem_and_bn_layout_match_numpy_transcription():
    model = resnet.ResNet(resnet.ResNetConfig(block="basic", layers=(1, 1, 1, 1), width=8, num_classes=3),
                          rngs=nnx.Rngs(0))
    sd = _randomised_state_dict(model)
    convert.load_state_dict(model, sd)
    images = np.random.default_rng(2).standard_normal((2, 16, 16, 3)).astype(np.float32)
    _, out = _forward(model, images)
    x = _conv2d_nchw(images.transpose(0, 3, 1, 2).astype(np.float64), sd["conv1.weight"].astype(np.float64),
                     stride=2, padding=3)
    x = (x - sd["bn1.running_mean"][None, :, None, None]) / np.sqrt(sd["bn1.running_var"][None, :, None, None] + 1e-5)
    x = x * sd["bn1.weight"][None, :, None, None] + sd["bn1.bias"][None, :, None, None]
    np.testing.assert_allclose(np.asarray(out["bn1"]).transpose(0, 3, 1, 2), x, rtol=1e-4, atol=1e-4)
    # MaxPool2d(3, 2, padding=1) after relu.
    r = np.pad(np.maximum(x, 0), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    pooled = np.max([r[:, :, dy:dy + 8:2, dx:dx + 8:2] for dy in range(3) for dx in range(3)], axis=0)
    np.testing.assert_allclose(np.asarray(out["maxpool"]).transpose(0, 3, 1, 2), pooled, rtol=1e-4, atol=1e-4)


def test_convnext_block_layout_matches_numpy_transcription():
    config = convnext.ConvNeXtConfig(depths=(1, 1, 1, 1), dims=(8, 8, 8, 16), num_classes=3)
    model = convnext.ConvNeXt(config, rngs=nnx.Rngs(0))
    sd = _randomised_state_dict(model)
    convert.load_state_dict(model, sd)
    images = np.random.default_rng(3).standard_normal((2, 32, 32, 3)).astype(np.float32)
    _, out = _forward(model, images)
    sd64 = {k: v.astype(np.float64) for k, v in sd.items()}
    x = np.asarray(out["stem"]).transpose(0, 3, 1, 2).astype(np.float64)
    p = "stages.0.blocks.0"
    y = _conv2d_nchw(x, sd64[f"{p}.conv_dw.weight"], sd64[f"{p}.conv_dw.bias"], padding=3, groups=8)
    y = y.transpose(0, 2, 3, 1)
    y = _layer_norm(y, sd64, f"{p}.norm")
    y = _linear(_gelu(_linear(y, sd64, f"{p}.mlp.fc1")), sd64, f"{p}.mlp.fc2") * sd64[f"{p}.gamma"]
    expected = x.transpose(0, 2, 3, 1) + y
    np.testing.assert_allclose(np.asarray(out[p]), expected, rtol=1e-4, atol=1e-4)
    # The downsampling layer: LayerNorm over channels, then a 2x2 stride-2 conv.
    z = _layer_norm(np.asarray(out["stages.2"]).astype(np.float64), sd64, "stages.3.downsample.0")
    z = _conv2d_nchw(z.transpose(0, 3, 1, 2), sd64["stages.3.downsample.1.weight"],
                     sd64["stages.3.downsample.1.bias"], stride=2)
    np.testing.assert_allclose(np.asarray(out["stages.3.downsample"]).transpose(0, 3, 1, 2), z, rtol=1e-4, atol=1e-4)


def test_export_then_import_round_trips(tmp_path):
    source = convnext.build("T", nnx.Rngs(0), num_classes=4, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    target = convnext.build("T", nnx.Rngs(1), num_classes=4, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    path = tmp_path / "convnext.safetensors"
    convert.save_safetensors(source, path)
    convnext.load_weights(target, path)
    a, b = convert.to_state_dict(source), convert.to_state_dict(target)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["stem.0.weight"].shape == (8, 3, 4, 4)
    assert a["stages.0.blocks.0.conv_dw.weight"].shape == (8, 1, 7, 7)
    assert a["stages.0.blocks.0.mlp.fc1.weight"].shape == (32, 8)


def _tiny_vit():
    return vit.VisionTransformer(vit.ViTConfig(width=16, depth=2, mlp_dim=32, num_heads=2, patch_size=8,
                                               img_size=16, num_classes=3), rngs=nnx.Rngs(0))


def test_every_fault_is_listed_and_nothing_is_loaded():
    model = _tiny_vit()
    before = convert.to_state_dict(model)
    sd = _randomised_state_dict(model)
    del sd["blocks.1.mlp.fc2.bias"]
    del sd["cls_token"]
    sd["blocks.0.attn.qkv.weight"] = np.zeros((48, 8), np.float32)
    sd["blocks.0.ls1.gamma"] = np.ones(16, np.float32)
    sd["blocks.0.norm1.num_batches_tracked"] = np.array(3)  # ignored
    with pytest.raises(convert.WeightLoadError) as info:
        convert.load_state_dict(model, sd, source="ckpt.safetensors")
    message = str(info.value)
    assert "ckpt.safetensors" in message and "nothing was loaded" in message
    assert "2 missing: blocks.1.mlp.fc2.bias, cls_token" in message
    assert "1 unexpected: blocks.0.ls1.gamma" in message
    assert "blocks.0.attn.qkv.weight: checkpoint (48, 8), model (48, 16)" in message
    after = convert.to_state_dict(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_non_finite_values_are_refused():
    model = _tiny_vit()
    sd = _randomised_state_dict(model)
    sd["norm.weight"][3] = np.nan
    with pytest.raises(convert.WeightLoadError, match="norm.weight: contains NaN"):
        convert.load_state_dict(model, sd)


def test_corrupt_safetensors_names_the_file(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(convert.WeightLoadError, match="broken.safetensors"):
        convert.read_state_dict(path)


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(convert.WeightLoadError, match="weights.npz: unknown checkpoint format"):
        convert.read_state_dict(tmp_path / "weights.npz")
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        convert.read_state_dict(tmp_path / "absent.safetensors")


def test_pth_without_torch_names_the_parity_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    path = tmp_path / "model.pth"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(convert.WeightLoadError, match=r"model.pth[\s\S]*jaxbrain\[parity\]"):
        convert.read_state_dict(path)


def test_wrapped_state_dict_and_prefix_are_unwrapped(tmp_path):
    model = _tiny_vit()
    sd = {f"module.{k}": v for k, v in _randomised_state_dict(model).items()}
    path = tmp_path / "wrapped.safetensors"
    save_file(sd, path)
    convert.load_checkpoint(model, path)
    np.testing.assert_array_equal(convert.to_state_dict(model)["head.weight"], sd["module.head.weight"])
