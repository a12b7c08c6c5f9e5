"""Weight initialisers that sample on the host when called eagerly.

Eager ``jax.random`` sampling compiles one XLA program per parameter shape, which makes building a ResNet on a
CPU take tens of seconds; these initialisers draw from numpy (seeded by the JAX key, so still deterministic in
``nnx.Rngs``) and fall back to the ``jax.nn.initializers`` equivalent when traced (``nnx.jit``, ``eval_shape``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# Standard deviation of a standard normal truncated to [-2, 2] (the constant jax.nn.initializers uses).
_TRUNCATED_STD = 0.87962566103423978


def _host_rng(key) -> np.random.Generator:
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data, dtype=np.uint32).ravel().tolist())


def _truncated_standard_normal(rng: np.random.Generator, shape) -> np.ndarray:
    sample = rng.standard_normal(shape)
    outside = np.abs(sample) > 2.0
    while outside.any():
        sample[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(sample) > 2.0
    return sample


def truncated_normal(stddev: float):
    """Normal truncated to two standard deviations, scaled by ``stddev`` (like timm's ``trunc_normal_``)."""
    traced = jax.nn.initializers.truncated_normal(stddev)

    def init(key, shape, dtype=jnp.float32):
        if isinstance(key, jax.core.Tracer):
            return traced(key, shape, dtype)
        return jnp.asarray(stddev * _truncated_standard_normal(_host_rng(key), shape), dtype)

    return init


def he_normal(mode: str = "fan_in"):
    """Kaiming normal (gain sqrt(2)) with the fan of a Linear (in, out) or HWIO Conv kernel."""
    traced = jax.nn.initializers.variance_scaling(2.0, mode, "normal")

    def init(key, shape, dtype=jnp.float32):
        if isinstance(key, jax.core.Tracer):
            return traced(key, shape, dtype)
        receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
        fan = shape[-2] * receptive if mode == "fan_in" else shape[-1] * receptive
        std = math.sqrt(2.0 / fan)
        return jnp.asarray(std * _host_rng(key).standard_normal(shape), dtype)

    return init


def lecun_normal():
    """Truncated LeCun normal, the default of ``nnx.Linear`` / ``nnx.Conv``."""
    traced = jax.nn.initializers.lecun_normal()

    def init(key, shape, dtype=jnp.float32):
        if isinstance(key, jax.core.Tracer):
            return traced(key, shape, dtype)
        receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
        std = math.sqrt(1.0 / (shape[-2] * receptive)) / _TRUNCATED_STD
        return jnp.asarray(std * _truncated_standard_normal(_host_rng(key), shape), dtype)

    return init


def torch_default():
    """PyTorch's default Conv/Linear weight init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in))."""
    traced = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

    def init(key, shape, dtype=jnp.float32):
        if isinstance(key, jax.core.Tracer):
            return traced(key, shape, dtype)
        receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
        bound = 1.0 / math.sqrt(shape[-2] * receptive)
        return jnp.asarray(_host_rng(key).uniform(-bound, bound, shape), dtype)

    return init
