"""A small plain (non-residual) CNN: the generator network of the planted benchmarks and the quickstart model.

Without skip connections each ReLU stage discards information, so one layer cannot reproduce another's
features linearly; this is what makes the planted layer of a synthetic benchmark identifiable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.models import registry

WIDTHS = (16, 32, 48, 64)
LAYERS = ("conv1", "conv2", "conv3", "conv4", "pool")


class TinyCNN(nnx.Module):
    """conv1 (stride 1) and conv2..conv4 (stride 2), 3x3 kernels with ReLU, global average pool, linear head."""

    def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
        init = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
        channels = (3, *WIDTHS)
        self.convs = nnx.List([
            nnx.Conv(c_in, c_out, (3, 3), strides=1 if i == 0 else 2, kernel_init=init, rngs=rngs)
            for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:]))
        ])
        self.head = nnx.Linear(WIDTHS[-1], num_classes, rngs=rngs)

    def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
        del train  # no dropout or batch statistics
        out = {}
        x = images
        for i, conv in enumerate(self.convs):
            x = jax.nn.relu(conv(x))
            out[f"conv{i + 1}"] = x
        x = jnp.mean(x, axis=(1, 2))
        out["pool"] = x
        logits = self.head(x)
        out["logits"] = logits
        return logits, out


def _build(variant: str, rngs: nnx.Rngs, num_classes: int | None = None) -> TinyCNN:
    del variant  # one size
    return TinyCNN(num_classes or 10, rngs=rngs)


FAMILIES = (
    registry.Family(
        name="tiny_cnn",
        variants={"tiny_cnn": ""},
        build=_build,
        layers=lambda variant: LAYERS,
        preprocessing=registry.Preprocessing(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    ),
)
