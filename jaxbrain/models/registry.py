"""The model registry: every backbone by name, with its candidate layers, preprocessing and weight loader.

Family modules (``cifar_resnet``, ``vit``, ``resnet``, ``convnext``) call :func:`register` at import time;
:func:`get` and :func:`names` import them on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FAMILY_MODULES = ("tiny_cnn", "cifar_resnet", "resnet", "vit", "convnext")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    resize: int  # shorter side resized to this (bilinear/bicubic as the checkpoint expects)
    crop: int  # centre crop size (square)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str  # registry key, e.g. "cifar_resnet20", "vit_s16", "resnet50", "convnext_s"
    family: str
    build: Callable[..., nnx.Module]  # build(rngs: nnx.Rngs, num_classes: int | None = None) -> module
    layers: tuple[str, ...]  # ordered candidate layers for sweeps (keys of `out`)
    depths: tuple[float, ...]  # normalised depth in [0, 1] of each candidate, same order
    preprocessing: Preprocessing
    load_weights: Callable[[nnx.Module, str | os.PathLike], None] | None  # loads a checkpoint file in place
    pretraining_samples: float | None = None  # D for scaling laws, when known

    def __post_init__(self):
        if len(self.layers) != len(self.depths):
            raise ValueError(f"model {self.name}: {len(self.layers)} layers but {len(self.depths)} depths")
        if any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ValueError(f"model {self.name}: depths must lie in [0, 1], got {self.depths}")


_REGISTRY: dict[str, ModelSpec] = {}
_loaded = False


def normalised_depths(n: int) -> tuple[float, ...]:
    """Depth of each of ``n`` ordered candidate layers as its position over the last position (0 .. 1)."""
    if n == 1:
        return (1.0,)
    return tuple(i / (n - 1) for i in range(n))


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry; a second spec under the same name is an error."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"model name {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for module in _FAMILY_MODULES:
            importlib.import_module(f"jaxbrain.models.{module}")
        _loaded = True


def get(name: str) -> ModelSpec:
    """The spec registered as ``name``; an unknown name raises KeyError listing the known names."""
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    """All registered model names, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def param_count(model: nnx.Module) -> int:
    """Number of trainable parameters (``nnx.Param``; batch-norm statistics are not counted)."""
    leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    return int(sum(leaf.size for leaf in leaves))


def forward_flops(spec: ModelSpec, model: nnx.Module) -> float:
    """Forward FLOPs per image at the spec's crop size, from XLA's cost analysis of the compiled logits."""
    size = spec.preprocessing.crop
    graphdef, state = nnx.split(model)

    def logits(state, images):
        return nnx.merge(graphdef, state)(images, train=False)[0]

    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    compiled = jax.jit(logits).lower(state, images).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, Sequence):
        analysis = analysis[0]
    if not analysis or "flops" not in analysis:
        raise RuntimeError(f"XLA cost analysis returned no FLOP count for {spec.name}")
    return float(analysis["flops"])
