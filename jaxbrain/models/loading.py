"""A model named in a config: its registry spec, what determines its features, and the built module.

`identify` resolves a config entry (`name`, `seed`, `weights`, `layers`) without building anything, so work that
is already done needs no model; `build` makes the module with its weights loaded.
"""

from __future__ import annotations

import pathlib

from flax import nnx

from jaxbrain import identity
from jaxbrain.models import registry


def identify(label: str, model_config, digests: identity.DigestCache) -> tuple[registry.ModelSpec, dict]:
    """The spec and the model's identity: label, name, seed, candidate layers, weights file and its digest."""
    spec = registry.get(model_config.name)
    layers = list(model_config.get("layers") or spec.layers)
    unknown = [layer for layer in layers if layer not in spec.layers]
    if unknown:
        raise ValueError(f"layers {unknown} are not candidate layers of {spec.name}: {list(spec.layers)}")
    weights = model_config.get("weights", "")
    if weights:
        if spec.load_weights is None:
            raise ValueError(f"model {spec.name} has no weight loader")
        if not pathlib.Path(weights).expanduser().is_file():
            raise FileNotFoundError(f"weights for model {spec.name} not found: {weights}")
    digest = digests.digest(pathlib.Path(weights).expanduser()) if weights else ""
    return spec, dict(label=label, name=spec.name, seed=int(model_config.get("seed", 0)), layers=layers,
                      weights=str(weights), weights_digest=digest)


def build(spec: registry.ModelSpec, model: dict) -> nnx.Module:
    """The module of an `identify`d model, its weights loaded."""
    module = spec.build(rngs=nnx.Rngs(model["seed"]))
    if model["weights"]:
        spec.load_weights(module, pathlib.Path(model["weights"]).expanduser())
    return module
