"""CORnet-S (Kubilius et al. 2019), written from the published architecture (dicarlolab/CORnet, cornet_s.py).

``V1``: conv 7x7/2 (64) -> BN -> ReLU -> max-pool 3/2 -> conv 3x3 (64) -> BN -> ReLU. ``V2``, ``V4``, ``IT``:
recurrent bottleneck blocks (128, 256, 512 channels) unrolled for 2, 4 and 2 time steps. A block maps its input
through ``conv_input`` (1x1) once; at step 0 the skip is ``norm_skip(skip(x))`` (1x1 stride 2) and ``conv2``
strides 2, at later steps the skip is the state itself and ``conv2`` strides 1; each step is conv1 (1x1, 4x
channels) -> BN -> ReLU -> conv2 (3x3) -> BN -> ReLU -> conv3 (1x1) -> BN, plus skip, ReLU, with batch norms
of its own per step (``norm1_t``). ``decoder``: average pool -> Linear(512, C).

Parameters carry the checkpoint's names (``V4.conv2.weight``, ``IT.norm3_1.running_var``,
``decoder.linear.weight``). Every step's output is in ``out`` as the public implementation's hooks name it
(``V1.output-t0``, ``V2.output-t1``, ``V4.output-t3``, ``decoder.avgpool-t0``), with the block's sub-steps
(``V4.conv1-t2``, ``V4.norm2_2``) and the final state under ``V4.output``.
Layouts, candidate layers and FLOP convention: docs/method.md, "Model zoo".
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.models import convert, initializers, registry
from jaxbrain.models.layers import max_pool

TIMES = {"V2": 2, "V4": 4, "IT": 2}
CHANNELS = {"V1": 64, "V2": 128, "V4": 256, "IT": 512}
SCALE = 4  # bottleneck expansion of CORblock_S


# The reference's conv init: normal with std sqrt(2 / (kh * kw * out_channels)), i.e. He normal on fan-out.
_cornet_init = initializers.he_normal("fan_out")


def _conv(in_ch, out_ch, k, stride, rngs):
    pad = (k - 1) // 2
    return nnx.Conv(in_ch, out_ch, (k, k), strides=stride, padding=((pad, pad), (pad, pad)), use_bias=False,
                    kernel_init=_cornet_init, rngs=rngs)


def _bn(ch, rngs):
    return nnx.BatchNorm(ch, momentum=0.9, epsilon=1e-5, rngs=rngs)


class V1Block(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = _conv(3, 64, 7, 2, rngs)
        self.norm1 = _bn(64, rngs)
        self.conv2 = _conv(64, 64, 3, 1, rngs)
        self.norm2 = _bn(64, rngs)

    def __call__(self, x, out, train):
        x = jax.nn.relu(self.norm1(self.conv1(x), use_running_average=not train))
        x = out["V1.pool"] = max_pool(x, 3, 2, 1)
        return jax.nn.relu(self.norm2(self.conv2(x), use_running_average=not train))


class CORblockS(nnx.Module):
    """One recurrent area; ``conv2`` is shared by all steps, its stride 2 at step 0 and 1 after."""

    def __init__(self, in_ch: int, out_ch: int, times: int, *, rngs: nnx.Rngs):
        self.times = times
        wide = out_ch * SCALE
        self.conv_input = _conv(in_ch, out_ch, 1, 1, rngs)
        self.skip = _conv(out_ch, out_ch, 1, 2, rngs)
        self.norm_skip = _bn(out_ch, rngs)
        self.conv1 = _conv(out_ch, wide, 1, 1, rngs)
        self.conv2 = nnx.Conv(wide, wide, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                              kernel_init=_cornet_init, rngs=rngs)
        self.conv3 = _conv(wide, out_ch, 1, 1, rngs)
        for t in range(times):
            setattr(self, f"norm1_{t}", _bn(wide, rngs))
            setattr(self, f"norm2_{t}", _bn(wide, rngs))
            setattr(self, f"norm3_{t}", _bn(out_ch, rngs))

    def __call__(self, x, out, prefix, train):
        ura = not train
        x = out[f"{prefix}.conv_input"] = self.conv_input(x)
        for t in range(self.times):
            skip = self.norm_skip(self.skip(x), use_running_average=ura) if t == 0 else x
            y = out[f"{prefix}.conv1-t{t}"] = self.conv1(x)
            y = out[f"{prefix}.norm1_{t}"] = getattr(self, f"norm1_{t}")(y, use_running_average=ura)
            y = jax.nn.relu(y)
            y = out[f"{prefix}.conv2-t{t}"] = jax.lax.conv_general_dilated(
                y, self.conv2.kernel[...].astype(y.dtype), (2, 2) if t == 0 else (1, 1), ((1, 1), (1, 1)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"))
            y = out[f"{prefix}.norm2_{t}"] = getattr(self, f"norm2_{t}")(y, use_running_average=ura)
            y = jax.nn.relu(y)
            y = out[f"{prefix}.conv3-t{t}"] = self.conv3(y)
            y = out[f"{prefix}.norm3_{t}"] = getattr(self, f"norm3_{t}")(y, use_running_average=ura)
            x = out[f"{prefix}.output-t{t}"] = jax.nn.relu(y + skip)
        return x


class Decoder(nnx.Module):
    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(CHANNELS["IT"], num_classes, kernel_init=initializers.torch_default(), rngs=rngs)


class CORnetS(nnx.Module):
    """``model(images, train=False) -> (logits, out)``; ``out`` keys follow the reference's module names."""

    def __init__(self, num_classes: int = 1000, times: dict[str, int] | None = None, *, rngs: nnx.Rngs):
        times = dict(TIMES if times is None else times)
        self.V1 = V1Block(rngs=rngs)
        self.V2 = CORblockS(CHANNELS["V1"], CHANNELS["V2"], times["V2"], rngs=rngs)
        self.V4 = CORblockS(CHANNELS["V2"], CHANNELS["V4"], times["V4"], rngs=rngs)
        self.IT = CORblockS(CHANNELS["V4"], CHANNELS["IT"], times["IT"], rngs=rngs)
        self.decoder = Decoder(num_classes, rngs=rngs)

    def __call__(self, images: jax.Array, train: bool = False):
        out = {}
        x = out["V1.output-t0"] = out["V1.output"] = self.V1(images, out, train)
        for area in ("V2", "V4", "IT"):
            x = out[f"{area}.output"] = getattr(self, area)(x, out, area, train)
        x = out["decoder.avgpool-t0"] = jnp.mean(x, axis=(1, 2))
        logits = out["decoder.linear"] = self.decoder.linear(x)
        return logits, out


def candidate_layers(times: dict[str, int] = TIMES) -> tuple[str, ...]:
    """Brain-Score's CORnet-S layers: V1's output, every time step of V2, V4 and IT, and the pooled features."""
    steps = [f"{area}.output-t{t}" for area in ("V2", "V4", "IT") for t in range(times[area])]
    return ("V1.output-t0", *steps, "decoder.avgpool-t0")


def build(variant: str, rngs: nnx.Rngs, num_classes: int | None = None) -> CORnetS:
    """Randomly initialised CORnet-S (variant ``"S"``)."""
    if variant != "S":
        raise ValueError(f"unknown CORnet variant {variant!r}; known: S")
    return CORnetS(1000 if num_classes is None else num_classes, rngs=rngs)


def load_weights(model: CORnetS, path: str | os.PathLike) -> None:
    """Load a CORnet-S checkpoint (the published ``.pth`` wraps it in ``state_dict`` with ``module.`` prefixes)."""
    convert.load_checkpoint(model, path, strip="module.")


PREPROCESSING = registry.Preprocessing(resize=256, crop=224, mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD,
                                       interpolation="bilinear")

FAMILIES = (
    registry.Family(
        name="cornet",
        variants={"cornet_s": "S"},
        build=build,
        layers=lambda variant: candidate_layers(),
        preprocessing=PREPROCESSING,
        load_weights=load_weights,
        pretraining_samples=1_281_167.0,
    ),
)
