"""AlexNet (Krizhevsky et al. 2012) in torchvision's single-tower layout ("one weird trick", Krizhevsky 2014).

``features``: conv 11x11/4 (64) -> ReLU -> max-pool 3/2 -> conv 5x5 (192) -> ReLU -> max-pool -> conv 3x3 (384)
-> ReLU -> conv 3x3 (256) -> ReLU -> conv 3x3 (256) -> ReLU -> max-pool; ``avgpool`` (adaptive, 6x6);
``classifier``: dropout -> Linear(9216, 4096) -> ReLU -> dropout -> Linear(4096, 4096) -> ReLU -> Linear(4096, C).
Every module's output is in ``out`` under its torchvision path (``features.0`` .. ``features.12``, ``avgpool``,
``classifier.0`` .. ``classifier.6``), and parameters carry torchvision's names (``features.3.weight``,
``classifier.4.bias``), so torchvision state dicts load through :mod:`jaxbrain.models.convert` unchanged.
The flatten before the classifier is channel-major (C, H, W) as in PyTorch, so checkpoints load without
permuting ``classifier.1``.
Layouts, candidate layers and FLOP convention: docs/method.md, "Model zoo".
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.models import convert, initializers, registry
from jaxbrain.models.layers import adaptive_avg_pool, max_pool

# (index in `features`, out channels, kernel, stride, padding); None marks the max-pools at 2, 5, 12.
_CONVS = ((0, 64, 11, 4, 2), (3, 192, 5, 1, 2), (6, 384, 3, 1, 1), (8, 256, 3, 1, 1), (10, 256, 3, 1, 1))
_POOLS = (2, 5, 12)
POOL_SIZE = (6, 6)

_uniform_fan_in = initializers.torch_default()


class AlexNet(nnx.Module):
    """``model(images, train=False) -> (logits, out)``; ``out`` keys are torchvision module paths."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, *, rngs: nnx.Rngs):
        features = {}
        in_ch = 3
        for index, out_ch, k, stride, pad in _CONVS:
            features[str(index)] = nnx.Conv(in_ch, out_ch, (k, k), strides=stride, padding=((pad, pad), (pad, pad)),
                                            kernel_init=_uniform_fan_in, rngs=rngs)
            in_ch = out_ch
        self.features = nnx.Dict(features)
        flat = in_ch * POOL_SIZE[0] * POOL_SIZE[1]
        self.classifier = nnx.Dict({
            "1": nnx.Linear(flat, 4096, kernel_init=_uniform_fan_in, rngs=rngs),
            "4": nnx.Linear(4096, 4096, kernel_init=_uniform_fan_in, rngs=rngs),
            "6": nnx.Linear(4096, num_classes, kernel_init=_uniform_fan_in, rngs=rngs),
        })
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, images: jax.Array, train: bool = False):
        out = {}
        x = images
        for index in range(13):
            if str(index) in self.features:
                x = self.features[str(index)](x)
            elif index in _POOLS:
                x = max_pool(x, 3, 2)
            else:
                x = jax.nn.relu(x)
            out[f"features.{index}"] = x
        x = out["avgpool"] = adaptive_avg_pool(x, POOL_SIZE)
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # PyTorch's flatten order (C, H, W)
        for index in range(7):
            if index in (0, 3):
                x = self.dropout(x, deterministic=not train)
            elif index in (2, 5):
                x = jax.nn.relu(x)
            else:
                x = self.classifier[str(index)](x)
            out[f"classifier.{index}"] = x
        return x, out


# Brain-Score's AlexNet layers: each pooled conv stage and the two hidden classifier layers, all after ReLU/pool.
LAYERS = ("features.2", "features.5", "features.7", "features.9", "features.12", "classifier.2", "classifier.5")


def build(variant: str, rngs: nnx.Rngs, num_classes: int | None = None) -> AlexNet:
    """Randomly initialised AlexNet (one variant, ``""``)."""
    if variant:
        raise ValueError(f"AlexNet has one variant (''), got {variant!r}")
    return AlexNet(1000 if num_classes is None else num_classes, rngs=rngs)


def load_weights(model: AlexNet, path: str | os.PathLike) -> None:
    """Load a torchvision AlexNet checkpoint (.safetensors, or .pth with torch) in place."""
    convert.load_checkpoint(model, path)


PREPROCESSING = registry.Preprocessing(resize=256, crop=224, mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD,
                                       interpolation="bilinear")

FAMILIES = (
    registry.Family(
        name="alexnet",
        variants={"alexnet": ""},
        build=build,
        layers=lambda variant: LAYERS,
        preprocessing=PREPROCESSING,
        load_weights=load_weights,
        pretraining_samples=1_281_167.0,
    ),
)
