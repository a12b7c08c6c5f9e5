"""Parity of the ViT variants with timm and torchvision: distilled DeiT, torchvision's ViT layout, DINOv2 with and
without registers, DINOv3 (rotary positions, timm's Eva class), CLIP image tower (pre-norm, quick-GELU), flex ViT.

Reference models are tiny (width 64, 2 heads, depth 2, 56-64 px; the layout and token logic are those of the
registered full-size models) with norms, layer scales, biases, heads and class/register/position tokens moved
away from their initial values. Weights go torch -> safetensors -> jaxbrain's loader (no torch on that path).
Inputs are real ImageNet photos from ../shared/realdata (random images when that folder is absent).
Errors are max|ours - reference| / max|reference| in float32. Needs the ``parity`` extra (torch, timm,
torchvision).
"""

import pathlib

import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="parity tests need torch: pip install 'jaxbrain[parity]'")
timm = pytest.importorskip("timm", reason="parity tests need timm: pip install 'jaxbrain[parity]'")
safetensors_torch = pytest.importorskip("safetensors.torch")

import jax.numpy as jnp  # noqa: E402

from jaxbrain.models import pos_embed, registry, vit, vit_layouts  # noqa: E402
from parity_support import relative_error  # noqa: E402

TOLERANCE = 1e-4
TINY = {"width": 64, "num_heads": 2, "depth": 2, "mlp_dim": 256}
PHOTOS = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata" / "imagenet_samples_100"

# registry name -> (timm model name or "torchvision", patch size, image size, classes)
CASES = {
    "deit_s16_distilled": ("deit_small_distilled_patch16_224", 16, 64, 10),
    "tv_vit_b16": ("torchvision", 16, 64, 10),
    "dinov2_s14": ("vit_small_patch14_dinov2", 14, 56, 0),
    "dinov2_s14_reg4": ("vit_small_patch14_reg4_dinov2", 14, 56, 0),
    "dinov3_s16": ("vit_small_patch16_dinov3", 16, 64, 0),
    "clip_b32": ("vit_base_patch32_clip_quickgelu_224", 32, 64, 10),
    "vit_flex:d384:L6:h6:p16": ("vit_small_patch16_224", 16, 64, 10),
}


def _photos(size: int, n: int = 3) -> np.ndarray:
    """``n`` real photos, shorter side resized and centre-cropped to ``size``, ImageNet-normalised, NHWC."""
    files = sorted(PHOTOS.glob("*.JPEG"))[:: 33][:n] if PHOTOS.is_dir() else []
    if len(files) < n:
        return np.random.default_rng(0).standard_normal((n, size, size, 3)).astype(np.float32)
    from PIL import Image

    images = []
    for f in files:
        img = Image.open(f).convert("RGB")
        scale = size / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                         Image.BICUBIC)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        images.append(np.asarray(img.crop((left, top, left + size, top + size)), np.float32) / 255.0)
    return ((np.stack(images) - registry.IMAGENET_MEAN) / registry.IMAGENET_STD).astype(np.float32)


def _perturb(model: "torch.nn.Module", seed: int = 0) -> None:
    """Move norms, biases, layer scales, heads and class/register/position tokens away from their init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("gamma", "gamma_1", "gamma_2") or (tensor.ndim == 1 and leaf in ("weight", "in_proj_weight")):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
            elif leaf.endswith("bias"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
            elif leaf.endswith(("token", "pos_embed", "pos_embedding")):
                tensor.copy_(0.5 * torch.randn(tensor.shape, generator=gen))
            elif name.startswith(("head", "heads")) and tensor.ndim == 2:
                tensor.copy_(0.05 * torch.randn(tensor.shape, generator=gen))


def _reference(name: str):
    source, patch, size, classes = CASES[name]
    if source == "torchvision":
        import torchvision

        return torchvision.models.VisionTransformer(
            image_size=size, patch_size=patch, num_layers=TINY["depth"], num_heads=TINY["num_heads"],
            hidden_dim=TINY["width"], mlp_dim=TINY["mlp_dim"], num_classes=classes)
    kwargs = {"embed_dim": TINY["width"], "depth": TINY["depth"], "num_heads": TINY["num_heads"],
              "img_size": size, "num_classes": classes}
    return timm.create_model(source, pretrained=False, **kwargs)


def _ours(name: str) -> vit.VisionTransformer:
    _, patch, size, classes = CASES[name]
    overrides = dict(vit.MODELS[name][3]) if name in vit.MODELS else {}
    overrides.pop("num_classes", None)
    config = vit.ViTConfig(**{**TINY, **overrides, "patch_size": patch, "img_size": size, "num_classes": classes})
    return vit.VisionTransformer(config, rngs=nnx.Rngs(0))


def _module_paths(name: str, out_keys) -> dict[str, str]:
    """Our ``out`` key -> the reference module whose forward output is the same tensor."""
    if CASES[name][0] == "torchvision":
        subs = {"": "", ".norm1": ".ln_1", ".norm2": ".ln_2", ".mlp": ".mlp"}
        paths = {f"blocks.{i}{s}": f"encoder.layers.encoder_layer_{i}{t}" for i in range(TINY["depth"])
                 for s, t in subs.items()}
        return {**paths, "norm": "encoder.ln"}
    eva = vit.MODELS.get(name, (None,) * 5)[4] == "timm_eva"
    paths = {}
    for key in out_keys:
        if eva and key.endswith((".ls1", ".ls2")):
            continue  # Eva multiplies by gamma_1/gamma_2 inline, no module to hook
        paths[key] = "pos_drop" if key == "pos_embed" else key
    return paths


def _run_reference(model, paths, images):
    captured, modules = {}, dict(model.named_modules())
    for key, path in paths.items():
        if path in modules and path not in ("",):
            def hook(_m, _i, output, key=key):
                output = output[0] if isinstance(output, tuple) else output
                captured[key] = output.detach().numpy().copy()
            modules[path].register_forward_hook(hook)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2))
    with torch.no_grad():
        logits = model(x).numpy()
        if hasattr(model, "forward_head"):
            captured["pre_logits"] = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
    return logits, captured


def _save(model, path):
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


@pytest.mark.parametrize("name", list(CASES))
def test_variant_matches_reference(name, tmp_path):
    theirs = _reference(name).eval()
    _perturb(theirs)
    _save(theirs, tmp_path / "weights.safetensors")
    ours = _ours(name)
    registry.get(name).load_weights(ours, tmp_path / "weights.safetensors")
    _assert_parity(name, ours, theirs)


def _assert_parity(name, ours, theirs):
    images = _photos(CASES[name][2])
    logits, out = nnx.jit(lambda m, x: m(x))(ours, jnp.asarray(images))
    _, out_keys = nnx.eval_shape(lambda m: m(jnp.asarray(images)), ours)
    paths = _module_paths(name, out_keys)
    ref_logits, captured = _run_reference(theirs, paths, images)

    errors = {"logits": relative_error(logits, ref_logits)}
    errors.update({key: relative_error(out[key], value) for key, value in captured.items()})
    worst = max(errors, key=errors.get)
    print(f"{name}: {len(errors)} tensors, worst {worst} {errors[worst]:.2e}, logits {errors['logits']:.2e}")
    expected_layers = {f"blocks.{i}" for i in range(TINY["depth"])}
    assert expected_layers <= set(errors), sorted(expected_layers - set(errors))
    bad = {k: v for k, v in errors.items() if v > TOLERANCE}
    assert not bad, f"relative errors above {TOLERANCE}: {bad}"


@pytest.mark.parametrize("name", ["dinov2_s14", "dinov2_s14_reg4"])
def test_checkpoint_on_another_grid_is_resampled_as_timm_does(name, tmp_path):
    """A DINOv2 checkpoint trained on a 5x5 patch grid, used at 4x4: timm resamples its table on the fly
    (dynamic_img_size), jaxbrain once at load time; both must agree."""
    source, patch, size, _ = CASES[name]
    theirs = timm.create_model(source, pretrained=False, embed_dim=TINY["width"], depth=TINY["depth"],
                               num_heads=TINY["num_heads"], img_size=patch * 5, num_classes=0,
                               dynamic_img_size=True).eval()
    _perturb(theirs, seed=1)
    _save(theirs, tmp_path / "weights.safetensors")
    ours = _ours(name)
    assert ours.pos_embed.shape[1] < theirs.pos_embed.shape[1]
    registry.get(name).load_weights(ours, tmp_path / "weights.safetensors")
    _assert_parity(name, ours, theirs)


@pytest.mark.parametrize("old, new, prefix", [((14, 14), (16, 16), 1), ((16, 16), (12, 12), 1),
                                              ((37, 37), (16, 16), 0), ((7, 7), (9, 5), 5)])
def test_position_table_resampling_matches_timm(old, new, prefix):
    from timm.layers import resample_abs_pos_embed

    table = np.random.default_rng(0).standard_normal((1, prefix + old[0] * old[1], 32)).astype(np.float32)
    expected = resample_abs_pos_embed(torch.from_numpy(table), list(new), list(old), num_prefix_tokens=prefix)
    ours = pos_embed.resample_abs_pos_embed(table, new, old, num_prefix_tokens=prefix)
    assert relative_error(ours, expected.numpy()) <= 1e-5
    np.testing.assert_array_equal(ours[:, :prefix], table[:, :prefix])


def test_torchvision_export_loads_strictly_into_torchvision():
    """The torchvision key map is a bijection onto torchvision's state dict."""
    import torchvision

    theirs = _reference("tv_vit_b16")
    ours = _ours("tv_vit_b16")
    state = {k: torch.from_numpy(np.array(v)) for k, v in vit_layouts.export(ours, "torchvision").items()}
    theirs.load_state_dict(state, strict=True)
    assert isinstance(theirs, torchvision.models.VisionTransformer)


# registry name -> timm model built at the registry's image size
FULL_SIZE = {"dinov2_s14": "vit_small_patch14_dinov2", "dinov2_s14_reg4": "vit_small_patch14_reg4_dinov2",
             "dinov3_s16": "vit_small_patch16_dinov3"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "dinov2_s14_reg4" else n
                                  for n in sorted(FULL_SIZE)])
def test_full_size_params_and_flops_match_timm(name):
    """Self-supervised towers have no published 224/256 px figures that count attention alike, so the
    reference is timm itself: parameters exactly, FLOPs from torch's FlopCounterMode (matmuls and attention;
    XLA also counts elementwise work, hence up to 4 % above)."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = registry.get(name)
    size = spec.preprocessing.crop
    theirs = timm.create_model(FULL_SIZE[name], pretrained=False, img_size=size).eval()
    for module in theirs.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False  # explicit q k^T and attn v matmuls, which the counter sees
    ours = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0)))
    assert registry.param_count(ours) == sum(p.numel() for p in theirs.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        theirs(torch.zeros(1, 3, size, size))
    ratio = registry.forward_flops(spec, ours) / counter.get_total_flops()
    print(f"{name}: params {registry.param_count(ours)}, jaxbrain / torch FLOPs {ratio:.4f}")
    assert 0.98 <= ratio <= 1.02, ratio


def _to_openai_clip(timm_state: dict) -> dict:
    """A timm CLIP tower's tensors under OpenAI's original keys (the layout OpenAI released)."""
    swaps = (("patch_embed.proj", "conv1"), ("norm_pre", "ln_pre"), ("blocks.", "transformer.resblocks."),
             (".norm1", ".ln_1"), (".norm2", ".ln_2"), ("attn.qkv.", "attn.in_proj_"), ("attn.proj", "attn.out_proj"),
             ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"))
    out = {"logit_scale": torch.tensor(4.6)}  # a text-side tensor the loader must ignore
    for key, value in timm_state.items():
        if key == "head.weight":
            out["visual.proj"] = value.t().contiguous()
        elif key == "cls_token":
            out["visual.class_embedding"] = value[0, 0]
        elif key == "pos_embed":
            out["visual.positional_embedding"] = value[0]
        elif key.startswith("norm."):
            out["visual.ln_post." + key[5:]] = value
        elif key != "head.bias":
            for old, new in swaps:
                key = key.replace(old, new)
            out["visual." + key] = value
    return out


def _to_meta_dinov2(timm_state: dict, gen) -> dict:
    """A timm DINOv2 state dict in facebookresearch's layout (mask token; registers' table covers the class)."""
    out = {k: v for k, v in timm_state.items() if k not in ("reg_token",)}
    out["mask_token"] = torch.randn(1, timm_state["cls_token"].shape[-1], generator=gen)
    if "reg_token" in timm_state:
        out["register_tokens"] = timm_state["reg_token"]
        cls_pos = 0.5 * torch.randn(1, 1, timm_state["cls_token"].shape[-1], generator=gen)
        out["pos_embed"] = torch.cat([cls_pos, timm_state["pos_embed"]], dim=1)
    return out


@pytest.mark.parametrize("name", ["clip_b32", "dinov2_s14", "dinov2_s14_reg4"])
def test_original_release_layouts_load_as_timm_converts_them(name, tmp_path):
    """OpenAI CLIP and facebookresearch DINOv2 files: timm's own checkpoint_filter_fn is the reference
    conversion; jaxbrain's loader must give the model that timm builds from the same file."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    source = _reference(name).eval()
    _perturb(source, seed=2)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    if name.startswith("clip"):
        state["head.bias"].zero_()  # OpenAI's projection has no bias
        original = _to_openai_clip(state)
    else:
        original = _to_meta_dinov2(state, torch.Generator().manual_seed(3))
    theirs = _reference(name).eval()
    theirs.load_state_dict(checkpoint_filter_fn({k: v.clone() for k, v in original.items()}, theirs))
    safetensors_torch.save_file({k: v.contiguous() for k, v in original.items()}, str(tmp_path / "orig.safetensors"))
    ours = _ours(name)
    registry.get(name).load_weights(ours, tmp_path / "orig.safetensors")
    _assert_parity(name, ours, theirs)
