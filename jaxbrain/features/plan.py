"""What an extraction keeps of each layer: its kind, its activation shape and the shape it is stored in.

Kinds: ``"gram"`` (the exact ``N x N`` Gram matrix of the flattened activations), ``"projection"`` (the sparse
random projection of layers larger than ``projection_dim``, smaller layers kept raw), ``"raw"`` (flattened),
``"pooled"`` (the spatial or token mean, ``(C,)``) and ``"tokens"`` (a token map ``(T, C)``; conv maps give
``T = H * W``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbrain.features.projection import PROJECTION_DIM

KINDS = ("gram", "projection", "raw", "pooled", "tokens")
DTYPES = ("float32", "float16")


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    layer: str
    kind: str
    activation_shape: tuple[int, ...]  # per stimulus
    feature_shape: tuple[int, ...]  # per stimulus, as stored (for gram: the flattened D)

    @property
    def projected(self) -> bool:
        return self.kind == "projection" and self.feature_shape[0] < math.prod(self.activation_shape)

    @property
    def flat_dim(self) -> int:
        return math.prod(self.activation_shape)


def resolve_keep(keep: str | Mapping[str, str], layers: Sequence[str]) -> dict[str, str]:
    """Per-layer kind from one kind for all layers or a mapping layer -> kind (every layer named)."""
    if isinstance(keep, str):
        mapping = {layer: keep for layer in layers}
    else:
        missing = [layer for layer in layers if layer not in keep]
        if missing:
            raise ValueError(f"keep mapping names no kind for layers {missing}")
        mapping = {layer: keep[layer] for layer in layers}
    bad = {layer: kind for layer, kind in mapping.items() if kind not in KINDS}
    if bad:
        raise ValueError(f"unknown keep kind(s) {bad}; choose from {KINDS}")
    return mapping


def feature_shape(kind: str, shape: tuple[int, ...], projection_dim: int) -> tuple[int, ...]:
    """The stored shape per stimulus of a layer with activation ``shape`` kept as ``kind``."""
    flat = math.prod(shape)
    if kind in ("raw", "gram"):
        return (flat,)
    if kind == "projection":
        return (projection_dim,) if flat > projection_dim else (flat,)
    if kind == "pooled":
        return (shape[-1],)
    if len(shape) == 1:  # tokens of a vector layer: one token
        return (1, shape[0])
    return (math.prod(shape[:-1]), shape[-1])


def layer_shapes(model: nnx.Module, crop: int) -> dict[str, tuple[int, ...]]:
    """Per-stimulus shape of every named output of ``model`` at ``crop`` x ``crop`` (no computation)."""
    graphdef, state = nnx.split(model)
    images = jax.ShapeDtypeStruct((1, crop, crop, 3), jnp.float32)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False)[1], state, images)
    return {name: tuple(v.shape[1:]) for name, v in out.items()}


def plan_layers(model: nnx.Module, spec: Any, layers: Sequence[str], keep: str | Mapping[str, str] = "gram",
                projection_dim: int = PROJECTION_DIM) -> dict[str, LayerPlan]:
    """What ``extract`` keeps of each layer: its kind, activation shape and stored shape per stimulus."""
    kinds = resolve_keep(keep, layers)
    shapes = layer_shapes(model, spec.preprocessing.crop)
    unknown = [layer for layer in layers if layer not in shapes]
    if unknown:
        name = getattr(spec, "name", type(model).__name__)
        raise KeyError(f"model {name!r} has no layers {unknown}; its layers are {sorted(shapes)}")
    return {layer: LayerPlan(layer, kinds[layer], shapes[layer],
                             feature_shape(kinds[layer], shapes[layer], projection_dim)) for layer in layers}


def check_request(ids: Sequence[Any], layers: Sequence[str], dtype: str, batch_size: int,
                  projection_dim: int) -> tuple[list[str], list[str]]:
    """``ids`` as strings and ``layers`` as a list, after refusing an empty or malformed request."""
    ids, layers = [str(i) for i in ids], list(layers)
    if not ids:
        raise ValueError("extract: no stimulus ids given")
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"extract: layers must be a non-empty list without repeats, got {layers}")
    if dtype not in DTYPES:
        raise ValueError(f"extract: dtype must be one of {DTYPES}, got {dtype!r}")
    if batch_size < 1 or projection_dim < 1:
        raise ValueError(f"extract: batch_size ({batch_size}) and projection_dim ({projection_dim}) must be >= 1")
    return ids, layers
