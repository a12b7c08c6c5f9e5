"""Training and evaluation transforms of each family's recipe, per example in numpy/PIL, deterministic per seed.

Every random transform takes a ``numpy.random.Generator``; the input pipeline seeds one per example from
(run seed, position of the example in the global stream) and one per global batch for mixup/cutmix, so a
transform's output depends on nothing but those numbers (not on threads, workers or process count).

Recipes (what the torchvision/timm/DeiT training scripts do):

* ResNet (torchvision reference recipe): random-resized crop to ``crop`` (area fraction ~ U(0.08, 1), log aspect
  ratio ~ U(log 3/4, log 4/3), ten tries, then the central crop clamped to the ratio range: torchvision's
  ``RandomResizedCrop.get_params``), bilinear resize, horizontal flip with probability 0.5, scale to [0, 1],
  normalise by the model's mean and std.
* DeiT (timm's ``create_transform`` with the DeiT arguments): random-resized crop (bicubic) + flip, RandAugment
  ``rand-m9-mstd0.5-inc1`` (two ops drawn with replacement from the 15 "increasing" ops, each applied with
  probability 0.5 at magnitude ~ N(9, 0.5) clipped to [0, 10], signed ops negated with probability 0.5, fill =
  the mean colour, bicubic resampling), normalise, random erasing (probability 0.25, one box of area fraction
  U(0.02, 1/3) and log aspect U(log 0.3, log 1/0.3), filled with N(0, 1) per pixel); per batch mixup (alpha 0.8)
  or cutmix (alpha 1.0), switched with probability 0.5, and label smoothing 0.1 (timm's ``Mixup`` in batch mode).
  ``three_augment=True`` replaces RandAugment and random erasing by DeiT III's 3-Augment: one of grayscale,
  solarize (threshold 128), Gaussian blur (radius U(0.1, 2)) chosen uniformly, then colour jitter 0.3
  (brightness, contrast, saturation factors U(0.7, 1.3) in a random order, as torchvision's ``ColorJitter``).
* Evaluation: resize the shorter side to ``resize``, centre crop ``crop``, normalise
  (:func:`jaxbrain.data.stimuli.preprocess`).
* Neural stimuli during fine-tuning (the paper's Appendix G): the evaluation resize and crop, then a random
  affine map as torchvision's ``RandomAffine(degrees=0.5, translate=(1/16, 1/16), scale=(0.9, 1.1))``: angle
  ~ U(-0.5, 0.5) degrees, integer shifts round(U(-W/16, W/16)) and round(U(-H/16, H/16)), scale ~ U(0.9, 1.1),
  about the image centre, nearest-neighbour resampling, black fill.

Mixup pairs: timm mixes each row with the row at the mirrored position of the batch. Here row ``r`` of the
global batch is mixed with row ``r xor 1`` (its neighbour), one lambda per global batch: the same involution
without fixed points, but it keeps each pair inside one process's rows, so the global batch does not depend
on the number of processes. Labels become ``lam * smooth(y) + (1 - lam) * smooth(y_partner)`` with
``smooth(y) = (1 - eps) one_hot(y) + eps / C``; for cutmix ``lam`` is corrected to the pasted box's area.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from jaxbrain.data import stimuli

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

RAND_AUGMENT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)
_MAX_LEVEL = 10.0


class ImageDecodeError(ValueError):
    """Encoded bytes that PIL cannot decode."""


def decode(data: bytes) -> Image.Image:
    """Encoded image bytes (any PIL format) -> an RGB PIL image, fully decoded."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as err:  # PIL raises several unrelated types for corrupt data
        raise ImageDecodeError(f"cannot decode image ({type(err).__name__}: {err})") from err


def _resample(name: str) -> Image.Resampling:
    if name not in _RESAMPLE:
        raise ValueError(f"unknown interpolation {name!r}; choose from {sorted(_RESAMPLE)}")
    return _RESAMPLE[name]


def normalize(image: Image.Image | np.ndarray, mean, std) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 ``(x / 255 - mean) / std`` (torchvision's ToTensor + Normalize, channels last)."""
    x = np.array(image, dtype=np.float32)
    x /= np.float32(255.0)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return x


# ---------------------------------------------------------------- geometric transforms


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop, with torchvision's ``RandomResizedCrop.get_params`` logic."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(image: Image.Image, size: int, rng: np.random.Generator, *,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation: str = "bilinear") -> Image.Image:
    """Crop a :func:`random_resized_crop_box` and resize it to ``size`` x ``size`` (antialiased PIL)."""
    top, left, h, w = random_resized_crop_box(image.height, image.width, rng, scale, ratio)
    return image.crop((left, top, left + w, top + h)).resize((size, size), _resample(interpolation))


def random_flip(image: Image.Image, rng: np.random.Generator, p: float = 0.5) -> Image.Image:
    """Mirror left-right with probability ``p``."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < p else image


def affine_matrix(width: int, height: int, angle: float, translate: tuple[float, float],
                  scale: float) -> tuple[float, ...]:
    """PIL's output->input affine coefficients for a rotation by ``angle`` degrees and a scaling about the
    image centre followed by a shift ``translate`` (torchvision's inverse matrix without shear)."""
    cx, cy = width * 0.5, height * 0.5
    tx, ty = translate
    rot = math.radians(angle)
    a, b, d, e = (math.cos(rot) / scale, math.sin(rot) / scale, -math.sin(rot) / scale, math.cos(rot) / scale)
    c = a * (-cx - tx) + b * (-cy - ty) + cx
    f = d * (-cx - tx) + e * (-cy - ty) + cy
    return a, b, c, d, e, f


@dataclasses.dataclass(frozen=True)
class RandomAffine:
    """The small random affine map applied to neural stimuli in fine-tuning (defaults: the paper's)."""

    degrees: float = 0.5
    translate: float = 1 / 16
    scale: tuple[float, float] = (0.9, 1.1)
    interpolation: str = "nearest"
    fill: int = 0

    def params(self, width: int, height: int, rng: np.random.Generator) -> tuple[float, tuple[int, int], float]:
        """``(angle, (tx, ty), scale)`` drawn as torchvision's ``RandomAffine.get_params``."""
        angle = float(rng.uniform(-self.degrees, self.degrees))
        max_dx, max_dy = self.translate * width, self.translate * height
        tx = int(round(rng.uniform(-max_dx, max_dx)))
        ty = int(round(rng.uniform(-max_dy, max_dy)))
        return angle, (tx, ty), float(rng.uniform(*self.scale))

    def apply(self, image: Image.Image, angle: float, translate: tuple[int, int], scale: float) -> Image.Image:
        matrix = affine_matrix(image.width, image.height, angle, translate, scale)
        return image.transform(image.size, Image.Transform.AFFINE, matrix, _resample(self.interpolation),
                               fillcolor=(self.fill,) * 3)

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return self.apply(image, *self.params(image.width, image.height, rng))


# ---------------------------------------------------------------- RandAugment (timm's increasing ops)


def _signed(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() > 0.5 else value


def rand_augment_argument(name: str, magnitude: float, negate: bool, translate_pct: float = 0.45):
    """The argument of op ``name`` at ``magnitude`` in [0, 10] (timm's level-to-argument maps); ``negate`` flips
    the sign of the signed ops. None for ops without an argument."""
    level = magnitude / _MAX_LEVEL
    sign = -1.0 if negate else 1.0
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if name == "Rotate":
        return sign * level * 30.0
    if name == "PosterizeIncreasing":
        return 4 - int(level * 4)
    if name == "SolarizeIncreasing":
        return 256 - min(256, int(level * 256))
    if name == "SolarizeAdd":
        return min(128, int(level * 110))
    if name.endswith("Increasing"):  # Color, Contrast, Brightness, Sharpness: factor 1 +- 0.9 level, >= 0.1
        return max(0.1, 1.0 + sign * level * 0.9)
    if name in ("ShearX", "ShearY"):
        return sign * level * 0.3
    if name in ("TranslateXRel", "TranslateYRel"):
        return sign * level * translate_pct
    raise ValueError(f"unknown RandAugment op {name!r}; known: {RAND_AUGMENT_OPS}")


_ENHANCERS = {"ColorIncreasing": ImageEnhance.Color, "ContrastIncreasing": ImageEnhance.Contrast,
              "BrightnessIncreasing": ImageEnhance.Brightness, "SharpnessIncreasing": ImageEnhance.Sharpness}


def rand_augment_op(image: Image.Image, name: str, argument, fill: tuple[int, int, int],
                    resample: str = "bicubic") -> Image.Image:
    """Apply one RandAugment op with its argument (PIL, as timm's ops)."""
    kw = {"resample": _resample(resample), "fillcolor": fill}
    if name in ("ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
        coefficients = {"ShearX": (1, argument, 0, 0, 1, 0), "ShearY": (1, 0, 0, argument, 1, 0),
                        "TranslateXRel": (1, 0, argument * image.width, 0, 1, 0),
                        "TranslateYRel": (1, 0, 0, 0, 1, argument * image.height)}[name]
        return image.transform(image.size, Image.Transform.AFFINE, coefficients, **kw)
    if name == "Rotate":
        return image.rotate(argument, **kw)
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name == "Equalize":
        return ImageOps.equalize(image)
    if name == "Invert":
        return ImageOps.invert(image)
    if name == "PosterizeIncreasing":  # keep ``argument`` high bits; 0 bits gives black, as Pillow < 13 did
        mask = (0xFF << (8 - argument)) & 0xFF
        return image if argument >= 8 else image.point([i & mask for i in range(256)] * 3)
    if name == "SolarizeIncreasing":
        return ImageOps.solarize(image, argument)
    if name == "SolarizeAdd":
        lut = [min(255, i + argument) if i < 128 else i for i in range(256)]
        return image.point(lut * 3)
    if name in _ENHANCERS:
        return _ENHANCERS[name](image).enhance(argument)
    raise ValueError(f"unknown RandAugment op {name!r}; known: {RAND_AUGMENT_OPS}")


@dataclasses.dataclass(frozen=True)
class RandAugment:
    """timm's ``rand-m{magnitude}-mstd{magnitude_std}-inc1`` with ``num_layers`` ops each applied w.p. ``prob``."""

    magnitude: float = 9.0
    magnitude_std: float = 0.5
    num_layers: int = 2
    prob: float = 0.5
    fill: tuple[int, int, int] = (124, 116, 104)
    resample: str = "bicubic"
    translate_pct: float = 0.45

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        for op in rng.choice(len(RAND_AUGMENT_OPS), self.num_layers, replace=True):
            name = RAND_AUGMENT_OPS[int(op)]
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude = rng.normal(magnitude, self.magnitude_std)
            magnitude = min(max(0.0, magnitude), _MAX_LEVEL)
            argument = rand_augment_argument(name, magnitude, rng.random() > 0.5, self.translate_pct)
            image = rand_augment_op(image, name, argument, self.fill, self.resample)
        return image


# ---------------------------------------------------------------- DeiT III 3-Augment and colour jitter


_JITTER_ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)


def color_jitter_params(rng: np.random.Generator, strength: float = 0.3) -> tuple[tuple[int, ...], tuple]:
    """torchvision ``ColorJitter(s, s, s).get_params``: an order of the four slots (brightness, contrast,
    saturation, hue) and factors ~ U(1 - s, 1 + s) for the first three (hue off)."""
    order = tuple(int(i) for i in rng.permutation(4))
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    return order, tuple(float(rng.uniform(low, high)) for _ in _JITTER_ENHANCERS)


def apply_color_jitter(image: Image.Image, order: tuple[int, ...], factors: tuple) -> Image.Image:
    """Brightness, contrast, saturation (PIL enhancers, as torchvision's PIL path) in slot ``order``."""
    for slot in order:
        if slot < len(_JITTER_ENHANCERS):
            image = _JITTER_ENHANCERS[slot](image).enhance(factors[slot])
    return image


def color_jitter(image: Image.Image, rng: np.random.Generator, strength: float = 0.3) -> Image.Image:
    """torchvision ``ColorJitter(s, s, s)`` on a PIL image."""
    return apply_color_jitter(image, *color_jitter_params(rng, strength))


def three_augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """DeiT III's 3-Augment choice: grayscale, solarize or Gaussian blur (radius ~ U(0.1, 2)), uniformly."""
    choice = int(rng.integers(3))
    if choice == 0:
        return image.convert("L").convert("RGB")
    if choice == 1:
        return ImageOps.solarize(image, 128)
    return image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))


def random_erasing(image: np.ndarray, rng: np.random.Generator, prob: float = 0.25, min_area: float = 0.02,
                   max_area: float = 1 / 3, min_aspect: float = 0.3) -> np.ndarray:
    """timm's ``RandomErasing(mode="pixel")`` on a normalised (H, W, C) image: with probability ``prob``, one box
    (ten tries) filled with standard-normal noise per pixel, in place. Returns ``image``."""
    if rng.random() > prob:
        return image
    height, width, channels = image.shape
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    for _ in range(10):
        target_area = rng.uniform(min_area, max_area) * height * width
        aspect = math.exp(rng.uniform(*log_aspect))
        h = int(round(math.sqrt(target_area * aspect)))
        w = int(round(math.sqrt(target_area / aspect)))
        if w < width and h < height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            image[top:top + h, left:left + w] = rng.standard_normal((h, w, channels), dtype=np.float32)
            break
    return image


# ---------------------------------------------------------------- batch-level mixing


def smooth_one_hot(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    """float32 (n, C): ``1 - smoothing + smoothing / C`` at the label, ``smoothing / C`` elsewhere."""
    off = smoothing / num_classes
    out = np.full((len(labels), num_classes), off, np.float32)
    out[np.arange(len(labels)), labels] = 1.0 - smoothing + off
    return out


def cutmix_box(height: int, width: int, lam: float, cy: int, cx: int) -> tuple[tuple[int, int, int, int], float]:
    """timm's CutMix box of side fractions sqrt(1 - lam) centred at (cy, cx), clipped to the image, and the
    corrected lambda = 1 - box area / image area. Box as ``(y0, y1, x0, x1)``."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    y0, y1 = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + (cut_h + 1) // 2, 0, height))
    x0, x1 = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + (cut_w + 1) // 2, 0, width))
    return (y0, y1, x0, x1), 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)


@dataclasses.dataclass(frozen=True)
class MixupCutmix:
    """timm's batch-mode ``Mixup``: with probability ``prob`` mix the batch, by cutmix w.p. ``switch_prob`` (lambda
    ~ Beta(cutmix_alpha)) else mixup (lambda ~ Beta(mixup_alpha)); targets smoothed by ``label_smoothing``.
    Either alpha may be 0 to disable that kind."""

    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1

    def params(self, rng: np.random.Generator) -> tuple[float, bool]:
        """``(lam, use_cutmix)`` for one batch; lam = 1 means no mixing."""
        if not (self.mixup_alpha > 0 or self.cutmix_alpha > 0) or rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    def mix(self, images: np.ndarray, labels: np.ndarray, num_classes: int, lam: float, use_cutmix: bool,
            center: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Mix (n, H, W, C) float32 ``images`` (n even) in place with their neighbours given the batch's parameters
        (``center``: the cutmix box centre (cy, cx)); returns the images and (n, num_classes) label_probs."""
        n, height, width = images.shape[:3]
        if n % 2:
            raise ValueError(f"mixup/cutmix needs an even number of rows per process, got {n}")
        partner = np.arange(n) ^ 1
        if lam != 1.0:
            if use_cutmix:
                (y0, y1, x0, x1), lam = cutmix_box(height, width, lam, *center)
                images[:, y0:y1, x0:x1] = images[partner, y0:y1, x0:x1]  # the right side is a copy
            else:
                partners = images[partner]
                partners *= np.float32(1.0 - lam)
                images *= np.float32(lam)
                images += partners
        targets = smooth_one_hot(labels, num_classes, self.label_smoothing)
        return images, (lam * targets + (1.0 - lam) * targets[partner]).astype(np.float32)

    def __call__(self, images: np.ndarray, labels: np.ndarray, num_classes: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw this batch's parameters from ``rng`` and :meth:`mix` (in place)."""
        lam, use_cutmix = self.params(rng)
        center = (int(rng.integers(0, images.shape[1])), int(rng.integers(0, images.shape[2])))
        return self.mix(images, labels, num_classes, lam, use_cutmix, center)


# ---------------------------------------------------------------- recipes


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training recipe: per-example transform settings and the batch-level mixing / label smoothing.

    ``example(image, rng)`` maps an RGB PIL image to float32 (crop, crop, 3), normalised.
    ``mixing`` (a :class:`MixupCutmix`) or ``label_smoothing`` > 0 make the pipeline add ``label_probs``.
    """

    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    rand_augment: RandAugment | None = None
    three_augment: bool = False
    color_jitter: float = 0.0
    erasing: float = 0.0
    mixing: MixupCutmix | None = None
    label_smoothing: float = 0.0

    @property
    def makes_label_probs(self) -> bool:
        return self.mixing is not None or self.label_smoothing > 0

    def example(self, image: Image.Image, rng: np.random.Generator) -> np.ndarray:
        image = random_resized_crop(image, self.crop, rng, scale=self.scale, ratio=self.ratio,
                                    interpolation=self.interpolation)
        image = random_flip(image, rng, self.flip)
        if self.rand_augment is not None:
            image = self.rand_augment(image, rng)
        if self.three_augment:
            image = three_augment(image, rng)
        if self.color_jitter > 0:
            image = color_jitter(image, rng, self.color_jitter)
        x = normalize(image, self.mean, self.std)
        return random_erasing(x, rng, self.erasing) if self.erasing > 0 else x

    def batch(self, images: np.ndarray, labels: np.ndarray, num_classes: int,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The batch-level step: mixing (in place) and/or label smoothing -> {"image", "label", ["label_probs"]}."""
        out = {"image": images, "label": labels}
        if self.mixing is not None:
            out["image"], out["label_probs"] = self.mixing(images, labels, num_classes, rng)
        elif self.label_smoothing > 0:
            out["label_probs"] = smooth_one_hot(labels, num_classes, self.label_smoothing)
        return out


def resnet_recipe(preprocessing: Any, *, label_smoothing: float = 0.0) -> Recipe:
    """torchvision's ResNet recipe: random-resized crop (bilinear) + flip, at the model's crop size and stats."""
    return Recipe(crop=preprocessing.crop, mean=tuple(preprocessing.mean), std=tuple(preprocessing.std),
                  interpolation="bilinear", label_smoothing=label_smoothing)


def deit_recipe(preprocessing: Any, *, three_augment: bool = False, random_erasing: float = 0.25,
                mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, switch_prob: float = 0.5,
                label_smoothing: float = 0.1, color_jitter: float = 0.3) -> Recipe:
    """The DeiT recipe (timm ``rand-m9-mstd0.5-inc1``, erasing 0.25, mixup 0.8 / cutmix 1.0, smoothing 0.1),
    or with ``three_augment`` DeiT III's 3-Augment + colour jitter in place of RandAugment and erasing."""
    fill = tuple(min(255, round(255 * m)) for m in preprocessing.mean)
    mixing = None
    if mixup_alpha > 0 or cutmix_alpha > 0:
        mixing = MixupCutmix(mixup_alpha, cutmix_alpha, 1.0, switch_prob, label_smoothing)
    return Recipe(crop=preprocessing.crop, mean=tuple(preprocessing.mean), std=tuple(preprocessing.std),
                  interpolation="bicubic",
                  rand_augment=None if three_augment else RandAugment(fill=fill, resample="bicubic"),
                  three_augment=three_augment, color_jitter=color_jitter if three_augment else 0.0,
                  erasing=0.0 if three_augment else random_erasing, mixing=mixing,
                  label_smoothing=label_smoothing)


RECIPES = {"resnet": resnet_recipe, "deit": deit_recipe}


def recipe(name: str, preprocessing: Any, **options) -> Recipe:
    """The recipe ``name`` ("resnet" or "deit") at the model's preprocessing, with ``options`` passed on."""
    if name not in RECIPES:
        raise ValueError(f"unknown training recipe {name!r}; choose from {sorted(RECIPES)}")
    return RECIPES[name](preprocessing, **options)


def eval_transform(image: Image.Image | np.ndarray, preprocessing: Any) -> np.ndarray:
    """Evaluation transform: resize shorter side, centre crop, normalise (float32 (crop, crop, 3))."""
    return stimuli.preprocess(np.asarray(image, np.uint8), preprocessing)


def neural_stimulus_transform(image: np.ndarray, preprocessing: Any, rng: np.random.Generator,
                              affine: RandomAffine = RandomAffine()) -> np.ndarray:
    """Fine-tuning transform of a neural stimulus: evaluation resize and crop, random affine, normalise."""
    image = stimuli.resize_shorter_side(np.asarray(image, np.uint8), preprocessing.resize,
                                        preprocessing.interpolation)
    image = Image.fromarray(stimuli.center_crop(image, preprocessing.crop))
    return normalize(affine(image, rng), preprocessing.mean, preprocessing.std)
