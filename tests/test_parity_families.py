"""Parity of the CNN families with PyTorch: torchvision's AlexNet, EfficientNet-B0, ResNet-18 and ConvNeXt-T, timm's
EfficientNet-B0, and
CORnet-S against a PyTorch transcription of the published architecture (dicarlolab/CORnet, cornet_s.py) written
here. Random weights with batch-norm statistics, norm scales and layer scales moved off their init values are
exported from PyTorch and loaded by name; inputs are real photos. Logits and every named intermediate that has
a PyTorch counterpart must agree to max|ours - theirs| / max|theirs| <= 1e-4 in float32.

Needs the ``parity`` extra (torch + torchvision + timm); without it every test here skips and says so.
"""

import pathlib

import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="parity tests need torch: pip install 'jaxbrain[parity]'")
torchvision = pytest.importorskip("torchvision", reason="parity tests need torchvision: pip install 'jaxbrain[parity]'")
safetensors_torch = pytest.importorskip("safetensors.torch")
PIL = pytest.importorskip("PIL.Image")

import jax.numpy as jnp  # noqa: E402

from jaxbrain.data import stimuli  # noqa: E402
from jaxbrain.models import registry  # noqa: E402
from parity_support import randomise, relative_error  # noqa: E402

TOLERANCE = 1e-4
PHOTOS = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata" / "imagenet_samples_100"
N_PHOTOS = 2


def _photos(size: int) -> np.ndarray:
    """The first photos of the ImageNet sample folder, resized/cropped to ``size`` and normalised (NHWC)."""
    files = sorted(PHOTOS.glob("*.JPEG"))[:N_PHOTOS]
    if len(files) < N_PHOTOS:
        pytest.skip(f"real photos not found under {PHOTOS}")
    pre = registry.Preprocessing(resize=size * 8 // 7, crop=size, mean=registry.IMAGENET_MEAN,
                                 std=registry.IMAGENET_STD)
    return np.stack([stimuli.preprocess(np.asarray(PIL.open(f).convert("RGB")), pre) for f in files])


def _hook_outputs(model: "torch.nn.Module", paths) -> dict:
    """Register hooks that copy the output of each module in ``paths`` (copies, as ReLUs work in place)."""
    captured, modules = {}, dict(model.named_modules())
    for path in paths:
        if path in modules and path:
            def hook(_module, _inputs, output, path=path):
                captured[path] = output.detach().numpy().copy()

            modules[path].register_forward_hook(hook)
    return captured


# ---- CORnet-S in PyTorch, transcribed from the published architecture (independent of jaxbrain) ----

def _torch_cornet_s():
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, times):
            super().__init__()
            self.times = times
            self.conv_input = nn.Conv2d(cin, cout, 1, bias=False)
            self.skip = nn.Conv2d(cout, cout, 1, stride=2, bias=False)
            self.norm_skip = nn.BatchNorm2d(cout)
            self.conv1 = nn.Conv2d(cout, 4 * cout, 1, bias=False)
            self.conv2 = nn.Conv2d(4 * cout, 4 * cout, 3, padding=1, bias=False)
            self.conv3 = nn.Conv2d(4 * cout, cout, 1, bias=False)
            for t in range(times):
                setattr(self, f"norm1_{t}", nn.BatchNorm2d(4 * cout))
                setattr(self, f"norm2_{t}", nn.BatchNorm2d(4 * cout))
                setattr(self, f"norm3_{t}", nn.BatchNorm2d(cout))

        def forward(self, x, record, name):
            x = self.conv_input(x)
            for t in range(self.times):
                skip = self.norm_skip(self.skip(x)) if t == 0 else x
                y = torch.relu(getattr(self, f"norm1_{t}")(self.conv1(x)))
                y = torch.nn.functional.conv2d(y, self.conv2.weight, stride=2 if t == 0 else 1, padding=1)
                y = torch.relu(getattr(self, f"norm2_{t}")(y))
                y = getattr(self, f"norm3_{t}")(self.conv3(y))
                x = torch.relu(y + skip)
                record[f"{name}.output-t{t}"] = x.detach().numpy().copy()
            return x

    class V1(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.norm1 = nn.BatchNorm2d(64)
            self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
            self.norm2 = nn.BatchNorm2d(64)

        def forward(self, x):
            x = torch.nn.functional.max_pool2d(torch.relu(self.norm1(self.conv1(x))), 3, 2, 1)
            return torch.relu(self.norm2(self.conv2(x)))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(512, 1000)

    class CORnetS(nn.Module):
        def __init__(self):
            super().__init__()
            self.V1, self.V2, self.V4, self.IT = V1(), Block(64, 128, 2), Block(128, 256, 4), Block(256, 512, 2)
            self.decoder = Decoder()
            self.record = {}

        def forward(self, x):
            x = self.V1(x)
            self.record["V1.output-t0"] = x.detach().numpy().copy()
            for name in ("V2", "V4", "IT"):
                x = getattr(self, name)(x, self.record, name)
            x = x.mean(dim=(2, 3))
            self.record["decoder.avgpool-t0"] = x.detach().numpy().copy()
            return self.decoder.linear(x)

    return CORnetS().eval()


def _torchvision(name):
    return getattr(torchvision.models, name)(weights=None).eval()


def _timm(name):
    timm = pytest.importorskip("timm", reason="timm-layout parity needs timm: pip install 'jaxbrain[parity]'")
    return timm.create_model(name, pretrained=False).eval()


# registry name -> (reference builder, image size). Sizes below 224 keep the heavy nets cheap; the maps and
# strides are the same code paths.
CASES = {
    "alexnet": (lambda: _torchvision("alexnet"), 224),
    "efficientnet_b0_tv": (lambda: _torchvision("efficientnet_b0"), 224),
    "efficientnet_b0": (lambda: _timm("efficientnet_b0"), 128),
    "resnet18": (lambda: _torchvision("resnet18"), 224),
    "convnext_t_tv": (lambda: _torchvision("convnext_tiny"), 128),
    "cornet_s": (_torch_cornet_s, 96),
}


@pytest.mark.parametrize("name", list(CASES))
def test_logits_and_intermediates_match_pytorch(name, tmp_path):
    make_reference, size = CASES[name]
    spec = registry.get(name)
    images = _photos(size)
    theirs = make_reference()
    randomise(theirs)
    checkpoint = tmp_path / f"{name}.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(checkpoint))
    ours = spec.build(nnx.Rngs(0))
    spec.load_weights(ours, checkpoint)

    _, keys = nnx.eval_shape(lambda m: m(jnp.asarray(images)), ours)
    captured = getattr(theirs, "record", None)
    if captured is None:
        captured = _hook_outputs(theirs, keys)
    with torch.no_grad():
        reference_logits = theirs(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    logits, out = nnx.jit(lambda m, x: m(x))(ours, jnp.asarray(images))

    errors = {"logits": relative_error(np.asarray(logits), reference_logits)}
    errors.update({key: relative_error(np.asarray(out[key]), captured[key]) for key in out if key in captured})
    worst = max(errors, key=errors.get)
    print(f"{name}: {len(errors) - 1} intermediates, worst {worst} {errors[worst]:.2e}, logits {errors['logits']:.2e}")
    missing = [layer for layer in spec.layers if layer not in errors]
    assert not missing, f"candidate layers without a PyTorch counterpart: {missing}"
    bad = {k: v for k, v in errors.items() if v > TOLERANCE}
    assert not bad, f"relative errors above {TOLERANCE}: {bad}"
