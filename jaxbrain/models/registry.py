"""The model registry: every backbone by name, with its candidate layers, preprocessing and weight loader.

One contract for every family (:class:`Family`): a family module declares its families once, in a module-level
``FAMILIES = (...)``; the registry imports the modules in ``_FAMILY_MODULES`` on first use and makes one
:class:`ModelSpec` per named variant. A family with ``flex`` set also answers open-ended names
``<flex>:<variant>`` (e.g. ``resnet_flex:w0.5:d1-1-1-1``), built on demand. :func:`register` still adds a single
spec directly. Method facts (layouts, flex syntax, FLOP convention, depth rule): docs/method.md, "Model zoo".
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping

import jax
from flax import nnx

from jaxbrain.models import flops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FAMILY_MODULES = ("tiny_cnn", "cifar_resnet", "resnet", "vit", "convnext", "alexnet", "efficientnet", "cornet")


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
    variant: str = ""  # the family's variant string this spec was made from
    objective: str = "SUP"  # pretraining objective of its published weights: SUP, SSL, image-language, adversarial
    dataset: str = ""  # pretraining dataset of its published weights, when known

    def __post_init__(self):
        if len(self.layers) != len(self.depths):
            raise ValueError(f"model {self.name}: {len(self.layers)} layers but {len(self.depths)} depths")
        if any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ValueError(f"model {self.name}: depths must lie in [0, 1], got {self.depths}")


@dataclasses.dataclass(frozen=True)
class Family:
    """One architecture family and how to make each of its models.

    ``variants`` maps registry names to the family's variant strings; ``build(variant, rngs, num_classes)``
    makes a randomly initialised module; ``layers(variant)`` gives its ordered candidate layers;
    ``preprocessing`` is one setting or a function of the variant. With ``flex`` set, any name
    ``<flex>:<variant>`` is a model of this family (the variant string is validated by ``layers``).
    """

    name: str
    variants: Mapping[str, str]
    build: Callable[..., nnx.Module]
    layers: Callable[[str], tuple[str, ...]]
    preprocessing: Preprocessing | Callable[[str], Preprocessing]
    load_weights: Callable[[nnx.Module, str | os.PathLike], None] | None = None
    pretraining_samples: float | None = None
    flex: str | None = None
    architecture: str = ""  # the models' family column (default: ``name``) when several families share one
    objective: str = "SUP"
    dataset: str = ""

    def spec(self, name: str, variant: str) -> ModelSpec:
        """The registry spec of ``variant`` under ``name``."""
        layers = tuple(self.layers(variant))
        pre = self.preprocessing if isinstance(self.preprocessing, Preprocessing) else self.preprocessing(variant)
        return ModelSpec(
            name=name,
            family=self.architecture or self.name,
            build=lambda rngs, num_classes=None: self.build(variant, rngs, num_classes),
            layers=layers,
            depths=normalised_depths(len(layers)),
            preprocessing=pre,
            load_weights=self.load_weights,
            pretraining_samples=self.pretraining_samples,
            variant=variant,
            objective=self.objective,
            dataset=self.dataset,
        )


_REGISTRY: dict[str, ModelSpec] = {}
_FAMILIES: dict[str, Family] = {}
_FLEX: dict[str, Family] = {}
_flex_specs: dict[str, ModelSpec] = {}
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


def add_family(family: Family) -> None:
    """Register every named variant of ``family`` (and its flex prefix)."""
    if family.name in _FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    if family.flex:
        _FLEX[family.flex] = family
    for name, variant in family.variants.items():
        register(family.spec(name, variant))


def _load_families() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module_name in _FAMILY_MODULES:
            module = importlib.import_module(f"jaxbrain.models.{module_name}")
            for family in getattr(module, "FAMILIES", ()):
                add_family(family)


def _flex_spec(name: str) -> ModelSpec | None:
    prefix, _, variant = name.partition(":")
    family = _FLEX.get(prefix)
    if family is None or not variant:
        return None
    if name not in _flex_specs:
        _flex_specs[name] = family.spec(name, variant)
    return _flex_specs[name]


def get(name: str) -> ModelSpec:
    """The spec registered as ``name`` (or a flex name); an unknown name raises KeyError listing the known names."""
    _load_families()
    if name in _REGISTRY:
        return _REGISTRY[name]
    spec = _flex_spec(name)
    if spec is not None:
        return spec
    flex = ", ".join(f"{prefix}:<variant>" for prefix in sorted(_FLEX))
    raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}; flex names: {flex}")


def known(name: str) -> bool:
    """Whether ``name`` is a registered model or a valid flex name."""
    try:
        get(name)
    except (KeyError, ValueError):
        return False
    return True


def names() -> list[str]:
    """All registered model names, sorted (flex names are open-ended and not listed)."""
    _load_families()
    return sorted(_REGISTRY)


def families() -> dict[str, Family]:
    """Every declared family by name."""
    _load_families()
    return dict(_FAMILIES)


def param_count(model: nnx.Module) -> int:
    """Number of trainable parameters (``nnx.Param``; batch-norm statistics are not counted)."""
    leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    return int(sum(leaf.size for leaf in leaves))


def forward_flops(spec: ModelSpec, model: nnx.Module, convention: str = "dense", size: int | None = None) -> float:
    """Forward FLOPs of one image at ``size`` (default the spec's crop size).

    ``convention="dense"`` (the paper's and the inventory's): 2 x multiply-adds of the convolutions and matrix
    products, padding taps included, as published tables count; ``"xla"``: XLA's cost analysis of the compiled
    logits. See
    :mod:`jaxbrain.models.flops` and docs/method.md, "Model zoo".
    """
    size = spec.preprocessing.crop if size is None else size
    if convention == "xla":
        return flops.xla_flops(model, size, spec.name)
    if convention == "dense":
        return flops.dense_flops(model, size)
    raise ValueError(f"unknown FLOP convention {convention!r}; known: {', '.join(flops.CONVENTIONS)}")
