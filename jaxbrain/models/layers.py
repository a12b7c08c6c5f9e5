"""Operations shared by the CNN families, in NHWC, with PyTorch's semantics.

``depthwise_conv`` runs a grouped convolution on CPU as a sum of shifted products (several times faster on
XLA:CPU); :func:`native_ops` switches that off while a forward is traced for counting FLOPs, so the count sees
the convolution it stands for.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import jax
import jax.numpy as jnp
from flax import nnx

_NATIVE = contextvars.ContextVar("jaxbrain_native_ops", default=False)


@contextlib.contextmanager
def native_ops():
    """Within this block every layer uses the plain XLA convolution (no CPU rewrites)."""
    token = _NATIVE.set(True)
    try:
        yield
    finally:
        _NATIVE.reset(token)


_DEPTHWISE_ROWS = 8  # images per block of the CPU depthwise path


def depthwise_conv(conv: nnx.Conv, x: jax.Array) -> jax.Array:
    """A depthwise ``conv`` (groups = channels, stride 1 or 2, symmetric padding as configured) applied to ``x``.

    On CPU it is a sum of shifted products, which XLA:CPU fuses into one loop and runs several times faster than
    its grouped convolution (GPU/TPU, and FLOP counting, keep the native grouped conv). Batches go through
    ``_DEPTHWISE_ROWS`` images at a time: on the whole batch XLA:CPU kept every tap's window alive (ConvNeXt-S at
    batch 64 peaked at 7.1 GB; in blocks 3.1 GB, and about 10 % faster).
    """
    if jax.default_backend() != "cpu" or _NATIVE.get():
        return conv(x)
    kernel = conv.kernel[...].astype(x.dtype)  # (kh, kw, 1, C)
    kh, kw = kernel.shape[:2]
    stride = conv.strides if isinstance(conv.strides, int) else conv.strides[0]
    (top, bottom), (left, right) = conv.padding
    bias = None if conv.bias is None else conv.bias[...].astype(x.dtype)

    def taps(block):
        padded = jnp.pad(block, ((0, 0), (top, bottom), (left, right), (0, 0)))
        h = (padded.shape[1] - kh) // stride + 1
        w = (padded.shape[2] - kw) // stride + 1
        acc = None
        for dy in range(kh):
            rows = padded[:, dy:dy + stride * (h - 1) + 1:stride]
            for dx in range(kw):
                term = rows[:, :, dx:dx + stride * (w - 1) + 1:stride, :] * kernel[dy, dx, 0]
                acc = term if acc is None else acc + term
        return acc if bias is None else acc + bias

    n = x.shape[0]
    if n > _DEPTHWISE_ROWS and n % _DEPTHWISE_ROWS == 0 and not _batch_axis_sharded(x):
        # a few images at a time: XLA:CPU keeps every tap's window of the whole batch alive otherwise
        blocks = jax.lax.map(taps, x.reshape(n // _DEPTHWISE_ROWS, _DEPTHWISE_ROWS, *x.shape[1:]))
        acc = blocks.reshape(n, *blocks.shape[2:])
    else:
        acc = taps(x)
    # The barrier keeps XLA from fusing the taps into the normalisation that follows (it would recompute them).
    return jax.lax.optimization_barrier(acc)


def _batch_axis_sharded(x: jax.Array) -> bool:
    """Whether ``x``'s leading axis is split over a mesh axis in its type (explicit sharding), where
    ``lax.map`` over it is refused."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    return bool(spec) and spec[0] is not None


def max_pool(x: jax.Array, kernel: int, stride: int, padding: int = 0) -> jax.Array:
    """PyTorch ``MaxPool2d(kernel, stride, padding)`` (floor mode) on NHWC."""
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, kernel, kernel, 1), (1, stride, stride, 1), pads)


def adaptive_avg_pool(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """PyTorch ``AdaptiveAvgPool2d(size)`` on NHWC: bin i spans [floor(i H / s), ceil((i + 1) H / s))."""
    h, w = x.shape[1:3]
    if (h, w) == tuple(size):
        return x
    rows = []
    for i in range(size[0]):
        r0, r1 = (i * h) // size[0], math.ceil((i + 1) * h / size[0])
        cols = [jnp.mean(x[:, r0:r1, (j * w) // size[1]:math.ceil((j + 1) * w / size[1])], axis=(1, 2))
                for j in range(size[1])]
        rows.append(jnp.stack(cols, axis=1))
    return jnp.stack(rows, axis=1)
