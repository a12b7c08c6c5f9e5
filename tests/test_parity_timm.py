"""Parity with timm: random-weight timm models converted to Flax give the same logits and intermediates.

Needs the ``parity`` extra (torch + timm); without it every test here skips and says so.
"""

import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="parity tests need torch: pip install 'jaxbrain[parity]'")
timm = pytest.importorskip("timm", reason="parity tests need timm: pip install 'jaxbrain[parity]'")
safetensors_torch = pytest.importorskip("safetensors.torch")

import jax.numpy as jnp  # noqa: E402

from jaxbrain.models import convert, registry, torch_pickle  # noqa: E402
from parity_support import randomise, relative_error  # noqa: E402

TOLERANCE = 1e-4
BATCH = 2

# timm name -> (registry name, {our out key: timm module path} for the names that differ)
CASES = {
    "vit_small_patch16_224": ("vit_s16", {"pos_embed": "pos_drop", "pre_logits": "fc_norm"}),
    "deit_small_patch16_224": ("deit_s16", {"pos_embed": "pos_drop", "pre_logits": "fc_norm"}),
    "vit_base_patch16_224": ("vit_b16", {"pos_embed": "pos_drop", "pre_logits": "fc_norm"}),
    "resnet18": ("resnet18", {"relu": "act1", "avgpool": "global_pool"}),
    "resnet50": ("resnet50", {"relu": "act1", "avgpool": "global_pool"}),
    "convnext_tiny": ("convnext_t", {}),
    "convnext_small": ("convnext_s", {}),
}


def _timm_with_hooks(timm_name, module_paths):
    model = timm.create_model(timm_name, pretrained=False).eval()
    randomise(model)
    captured = {}
    modules = dict(model.named_modules())
    for path in module_paths:
        if path not in modules:
            continue

        def hook(_module, _inputs, output, path=path):
            captured[path] = output.detach().numpy().copy()

        modules[path].register_forward_hook(hook)
    return model, captured


@pytest.mark.parametrize("timm_name", list(CASES))
def test_logits_and_intermediates_match_timm(timm_name, tmp_path):
    name, renames = CASES[timm_name]
    spec = registry.get(name)
    ours = spec.build(nnx.Rngs(0))
    size = spec.preprocessing.crop
    images = np.random.default_rng(0).standard_normal((BATCH, size, size, 3)).astype(np.float32)
    # Every intermediate we name, mapped to the timm module that produces it.
    _, out_keys = nnx.eval_shape(lambda m: m(jnp.asarray(images)), ours)
    paths = {key: renames.get(key, key) for key in out_keys}

    theirs, captured = _timm_with_hooks(timm_name, set(paths.values()))
    checkpoint = tmp_path / f"{timm_name}.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(checkpoint))
    spec.load_weights(ours, checkpoint)

    with torch.no_grad():
        timm_logits = theirs(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    logits, out = nnx.jit(lambda m, x: m(x))(ours, jnp.asarray(images))

    errors = {"logits": relative_error(np.asarray(logits), timm_logits)}
    compared = 0
    for key, path in paths.items():
        if path in captured:
            errors[key] = relative_error(np.asarray(out[key]), captured[path])
            compared += 1
    worst = max(errors, key=errors.get)
    print(f"{timm_name}: {compared} intermediates, worst {worst} {errors[worst]:.2e}, logits {errors['logits']:.2e}")
    assert compared >= len(spec.layers), f"only {compared} of our layers had a timm counterpart"
    assert all(layer in errors for layer in spec.layers), [la for la in spec.layers if la not in errors]
    bad = {k: v for k, v in errors.items() if v > TOLERANCE}
    assert not bad, f"relative errors above {TOLERANCE}: {bad}"


def test_export_round_trips_into_timm():
    """A Flax model exported to a state dict loads strictly into timm and gives the same logits."""
    spec = registry.get("resnet18")
    ours = spec.build(nnx.Rngs(3))
    theirs = timm.create_model("resnet18", pretrained=False).eval()
    state = {k: torch.from_numpy(np.array(v)) for k, v in convert.to_state_dict(ours).items()}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    images = np.random.default_rng(1).standard_normal((BATCH, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    logits, _ = ours(jnp.asarray(images))
    assert relative_error(np.asarray(logits), expected) <= TOLERANCE


def test_pth_checkpoint_through_torch(tmp_path):
    theirs = timm.create_model("resnet18", pretrained=False).eval()
    randomise(theirs)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": theirs.state_dict()}, path)
    spec = registry.get("resnet18")
    ours = spec.build(nnx.Rngs(0))
    spec.load_weights(ours, path)
    exported = convert.to_state_dict(ours)
    for key, value in theirs.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(exported[key], value.numpy())


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_free_reader_matches_torch_load(tmp_path, zip_format):
    """The restricted unpickler reads both torch.save layouts exactly as torch.load does."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=gen)
    state = {
        "w": base,
        "w_t": base.t(),  # shares storage, transposed strides
        "row": base[2],  # offset view
        "half": torch.randn(3, 2, generator=gen).half(),
        "steps": torch.tensor(11),
        "ids": torch.arange(4, dtype=torch.int32),
    }
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    ours = torch_pickle.load(path)
    reference = torch.load(path, weights_only=True)
    assert list(ours) == list(reference)
    for key, value in reference.items():
        assert ours[key].dtype == value.numpy().dtype
        np.testing.assert_array_equal(ours[key], value.numpy())
