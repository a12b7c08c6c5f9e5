"""Augmentations against torchvision / timm (skipped without torch) and their determinism."""

import math
import pathlib
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from jaxbrain.models import registry
from jaxbrain.train import augment

PREP = registry.Preprocessing(resize=256, crop=224, mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD)


def _photos(realdata, n=4):
    paths = sorted((realdata / "imagenet_samples_100").glob("*.JPEG"))[:n]
    return [Image.open(p).convert("RGB") for p in paths]


def _torch():
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision.transforms")
    return torch, tv


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_eval_transform_equals_torchvision(realdata, interpolation):
    torch, tv = _torch()
    prep = registry.Preprocessing(256, 224, registry.IMAGENET_MEAN, registry.IMAGENET_STD, interpolation)
    mode = {"bilinear": tv.InterpolationMode.BILINEAR, "bicubic": tv.InterpolationMode.BICUBIC}[interpolation]
    geometry = tv.Compose([tv.Resize(256, interpolation=mode), tv.CenterCrop(224)])
    full = tv.Compose([geometry, tv.ToTensor(), tv.Normalize(registry.IMAGENET_MEAN, registry.IMAGENET_STD)])
    for photo in _photos(realdata):
        ours = augment.eval_transform(photo, prep)
        theirs = full(photo).numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6)
        # the geometry is pixel-equal: undo the normalisation exactly in uint8
        pixels = np.rint((ours * np.float32(prep.std) + np.float32(prep.mean)) * 255).astype(np.uint8)
        np.testing.assert_array_equal(pixels, np.asarray(geometry(photo)))


def test_normalize_is_bitwise_torchvision(realdata):
    torch, tv = _torch()
    photo = _photos(realdata, 1)[0]
    theirs = tv.Normalize(PREP.mean, PREP.std)(tv.ToTensor()(photo)).numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(augment.normalize(photo, PREP.mean, PREP.std), theirs)


def test_random_resized_crop_fallback_equals_torchvision():
    torch, tv = _torch()
    for height, width in [(10, 1000), (1000, 10), (12, 900)]:
        img = Image.new("RGB", (width, height))
        torch.manual_seed(0)
        theirs = tv.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
        ours = augment.random_resized_crop_box(height, width, np.random.default_rng(0))
        assert ours == tuple(theirs)


def test_random_resized_crop_box_distribution_equals_torchvision():
    from scipy import stats

    torch, tv = _torch()
    height, width, n = 300, 500, 1200
    img = Image.new("RGB", (width, height))
    torch.manual_seed(0)
    theirs = np.array([tv.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])
    rng = np.random.default_rng(1)
    ours = np.array([augment.random_resized_crop_box(height, width, rng) for _ in range(n)])
    for column, name in enumerate(["top", "left", "h", "w"]):
        assert stats.ks_2samp(ours[:, column], theirs[:, column]).pvalue > 1e-3, name
    assert (ours[:, 0] + ours[:, 2] <= height).all() and (ours[:, 1] + ours[:, 3] <= width).all()


def test_random_resized_crop_pixels_equal_torchvision(realdata):
    torch, tv = _torch()
    from torchvision.transforms import functional as F

    photo = _photos(realdata, 1)[0]
    rng = np.random.default_rng(3)
    for interpolation, mode in [("bilinear", F.InterpolationMode.BILINEAR), ("bicubic", F.InterpolationMode.BICUBIC)]:
        box = augment.random_resized_crop_box(photo.height, photo.width, np.random.default_rng(3))
        ours = augment.random_resized_crop(photo, 224, np.random.default_rng(3), interpolation=interpolation)
        theirs = F.resized_crop(photo, *box, [224, 224], interpolation=mode)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    del rng


def test_affine_equals_torchvision(realdata):
    torch, tv = _torch()
    from torchvision.transforms import functional as F

    photo = _photos(realdata, 1)[0].resize((96, 80))
    for interpolation, mode in [("nearest", F.InterpolationMode.NEAREST), ("bilinear", F.InterpolationMode.BILINEAR)]:
        affine = augment.RandomAffine(interpolation=interpolation)
        for angle, shift, scale in [(0.4, (3, -5), 1.07), (-0.5, (-6, 4), 0.91), (0.0, (0, 0), 1.0)]:
            ours = affine.apply(photo, angle, shift, scale)
            theirs = F.affine(photo, angle=angle, translate=list(shift), scale=scale, shear=[0.0, 0.0],
                              interpolation=mode, fill=0)
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_affine_params_follow_the_paper_ranges():
    affine = augment.RandomAffine()
    rng = np.random.default_rng(0)
    draws = [affine.params(224, 160, rng) for _ in range(2000)]
    angles = np.array([d[0] for d in draws])
    shifts = np.array([d[1] for d in draws])
    scales = np.array([d[2] for d in draws])
    assert np.abs(angles).max() <= 0.5 and np.abs(angles).max() > 0.45
    assert np.abs(shifts[:, 0]).max() == round(224 / 16) and np.abs(shifts[:, 1]).max() == round(160 / 16)
    assert scales.min() >= 0.9 and scales.max() <= 1.1 and scales.max() - scales.min() > 0.19


def test_rand_augment_ops_equal_timm(realdata):
    pytest.importorskip("torch")
    timm_aa = pytest.importorskip("timm.data.auto_augment")
    photo = _photos(realdata, 1)[0].resize((64, 48))
    fill = (124, 116, 104)
    hparams = {"translate_const": 100, "img_mean": fill, "interpolation": Image.Resampling.BICUBIC}
    for name in augment.RAND_AUGMENT_OPS:
        for magnitude in (3.0, 9.0, 10.0):
            for negate, draw in ((True, 0.9), (False, 0.1)):
                level_fn = timm_aa.LEVEL_TO_ARG[name]
                with mock.patch.object(timm_aa.random, "random", return_value=draw):
                    timm_args = level_fn(magnitude, hparams) if level_fn else ()
                ours_arg = augment.rand_augment_argument(name, magnitude, negate)
                assert (ours_arg,) == tuple(timm_args) or (ours_arg is None and timm_args == ()), name
                if name == "PosterizeIncreasing" and timm_args[0] == 0:
                    continue  # Pillow 13 refuses 0 bits; checked below
                theirs = timm_aa.NAME_TO_OP[name](photo, *timm_args, fillcolor=fill,
                                                  resample=Image.Resampling.BICUBIC)
                ours = augment.rand_augment_op(photo, name, ours_arg, fill, "bicubic")
                np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs), err_msg=name)
    black = augment.rand_augment_op(photo, "PosterizeIncreasing", 0, fill)
    assert not np.asarray(black).any()


def test_mixup_and_cutmix_equal_timm():
    torch = pytest.importorskip("torch")
    timm_mixup = pytest.importorskip("timm.data.mixup")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 16, 12, 3)).astype(np.float32)
    labels = np.array([3, 7])
    mixing = augment.MixupCutmix(label_smoothing=0.1)
    for lam, use_cutmix in [(0.7, False), (0.37, True), (1.0, False)]:
        theirs = timm_mixup.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=10)
        np.random.seed(5)
        cy, cx = np.random.randint(0, 16), np.random.randint(0, 12)
        np.random.seed(5)
        with mock.patch.object(theirs, "_params_per_batch", return_value=(lam, use_cutmix)):
            x, y = theirs(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels))
        ours_x, ours_y = mixing.mix(images.copy(), labels, 10, lam, use_cutmix, (cy, cx))
        # a batch of two: timm's mirrored partner is the neighbour
        np.testing.assert_allclose(ours_x, x.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-6)
        np.testing.assert_allclose(ours_y, y.numpy(), rtol=0, atol=1e-7)


def test_cutmix_box_equals_timm():
    pytest.importorskip("torch")
    timm_mixup = pytest.importorskip("timm.data.mixup")
    for lam in (0.05, 0.3, 0.8, 0.999):
        for seed in range(5):
            np.random.seed(seed)
            box, corrected = timm_mixup.cutmix_bbox_and_lam((3, 37, 29), lam)
            np.random.seed(seed)
            cy, cx = np.random.randint(0, 37), np.random.randint(0, 29)
            ours_box, ours_lam = augment.cutmix_box(37, 29, lam, cy, cx)
            assert ours_box == tuple(int(b) for b in box) and ours_lam == pytest.approx(corrected, abs=1e-12)


def test_mixup_params_follow_timm_probabilities():
    mixing = augment.MixupCutmix()
    rng = np.random.default_rng(0)
    draws = [mixing.params(rng) for _ in range(4000)]
    cut = np.array([c for _, c in draws])
    lams = np.array([lam for lam, _ in draws])
    assert abs(cut.mean() - 0.5) < 0.03
    assert abs(lams[cut].mean() - 0.5) < 0.03 and abs(lams[~cut].var() - 1 / (4 * 2.6)) < 0.01  # Beta(.8,.8)
    assert augment.MixupCutmix(mixup_alpha=0, cutmix_alpha=0).params(rng) == (1.0, False)


def test_label_smoothing_formula():
    probs = augment.smooth_one_hot(np.array([0, 2]), 4, 0.1)
    expected = np.full((2, 4), 0.025)
    expected[0, 0] = expected[1, 2] = 1 - 0.1 + 0.025
    np.testing.assert_allclose(probs, expected, rtol=1e-6)


def test_color_jitter_and_grayscale_equal_torchvision(realdata):
    torch, tv = _torch()
    from torchvision.transforms import functional as F

    photo = _photos(realdata, 1)[0].resize((64, 48))
    order, factors = augment.color_jitter_params(np.random.default_rng(2))
    assert sorted(order) == [0, 1, 2, 3] and all(0.7 <= f <= 1.3 for f in factors)
    theirs = photo
    adjust = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation]
    for slot in order:
        if slot < 3:
            theirs = adjust[slot](theirs, factors[slot])
    np.testing.assert_array_equal(np.asarray(augment.apply_color_jitter(photo, order, factors)), np.asarray(theirs))
    gray = [augment.three_augment(photo, np.random.default_rng(s)) for s in range(30)]
    expected = np.asarray(tv.Grayscale(3)(photo))
    assert any(np.array_equal(np.asarray(g), expected) for g in gray)


def test_random_erasing_box_within_timm_ranges():
    image = np.zeros((60, 80, 3), np.float32)
    rng = np.random.default_rng(0)
    assert augment.random_erasing(image, rng, prob=0.0) is image and not image.any()
    areas = []
    for _ in range(200):
        erased = augment.random_erasing(image.copy(), rng, prob=1.0)
        rows, cols = np.nonzero(np.any(erased != 0, axis=-1))
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert (erased != 0).any(axis=-1).sum() == h * w
        areas.append(h * w / (60 * 80))
        assert 0.3 / 1.5 <= h / w <= 1.5 / 0.3
    assert 0.015 <= min(areas) and max(areas) <= 0.36


def test_recipes_are_deterministic_per_seed(realdata):
    photo = _photos(realdata, 1)[0]
    for recipe in (augment.recipe("resnet", PREP), augment.recipe("deit", PREP),
                   augment.recipe("deit", PREP, three_augment=True)):
        first = recipe.example(photo, np.random.default_rng([7, 0, 3]))
        again = recipe.example(photo, np.random.default_rng([7, 0, 3]))
        other = recipe.example(photo, np.random.default_rng([7, 0, 4]))
        assert first.shape == (224, 224, 3) and first.dtype == np.float32
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, other)
    with pytest.raises(ValueError, match="unknown training recipe"):
        augment.recipe("vgg", PREP)


def test_neural_stimulus_transform_keeps_the_eval_geometry_up_to_a_small_affine(realdata):
    photo = np.asarray(_photos(realdata, 1)[0])
    plain = augment.eval_transform(photo, PREP)
    identity = augment.RandomAffine(degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    same = augment.neural_stimulus_transform(photo, PREP, np.random.default_rng(0), identity)
    np.testing.assert_allclose(same, plain, atol=2e-6)
    moved = augment.neural_stimulus_transform(photo, PREP, np.random.default_rng(0))
    assert moved.shape == plain.shape and not np.allclose(moved, plain)
    assert math.isfinite(float(moved.sum()))


def test_decode_error_names_the_problem(tmp_path: pathlib.Path):
    with pytest.raises(augment.ImageDecodeError, match="cannot decode image"):
        augment.decode(b"not an image")
