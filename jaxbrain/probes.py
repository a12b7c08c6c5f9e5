"""Trained readouts of a layer's tokens: the attention probe and the mean-pool baselines (docs/method.md,
Attention probes and readouts).

Every readout starts with the same token encoder: tokens -> Linear(d_model) -> LayerNorm -> + a fixed sinusoidal
position code (base 1e4). Then

- ``attention``: 16 learned queries (std 0.02) cross-attend to the encoded tokens in one block with pre-LN on the
  queries only (16 heads, attention and residual dropout), a final LayerNorm, flattened 16 x d_model;
  a feed-forward sub-block, query self-attention and a token self-attention encoder are options (off in the paper);
- ``lowrank``: the mean-pooled encoded tokens -> Linear(d_model -> rho, no bias);
- ``mlp``: the mean-pooled encoded tokens -> LN -> Linear(d_model -> h) -> GELU -> Dropout -> Linear(h -> 16 x d);

each followed by one linear head per subject. A system holds the heads of one subject (SS) or of every subject
(MS: the trunk and queries shared). Heads are stored padded to the largest subject's target count, as one
``(S, D, N_max)`` array, so one compiled step serves every subject; the padding is never trained (zero gradient
and zero weight decay on zero entries) and never counted (:func:`parameter_count`).
Linear weights are Xavier-uniform with zero biases; head blocks are Xavier-uniform per subject (fan-out N_s).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

READOUTS = ("attention", "lowrank", "mlp")
_XAVIER = nnx.initializers.xavier_uniform()
_ZEROS = nnx.initializers.zeros_init()


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Architecture of a readout (Table S5 defaults)."""

    readout: str = "attention"
    d_model: int = 384
    n_queries: int = 16
    n_heads: int = 16
    dropout: float = 0.3
    attention_dropout: float | None = None  # None: the same as dropout
    position_base: float = 1e4
    query_std: float = 0.02
    feed_forward: bool = False
    query_self_attention: bool = False
    token_encoder: bool = False
    rank: int = 0      # low-rank rho; 0: matched to the attention probe's parameter count
    hidden: int = 0    # MLP h; 0: matched

    def __post_init__(self):
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; choose from {READOUTS}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def as_tokens(x):
    """(B, C) -> (B, 1, C); (B, N, C) as is; (B, H, W, C) -> (B, H * W, C)."""
    if x.ndim == 2:
        return x[:, None, :]
    if x.ndim == 3:
        return x
    if x.ndim == 4:
        return x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3])
    raise ValueError(f"tokens: expected (B, C), (B, N, C) or (B, H, W, C) features, got shape {tuple(x.shape)}")


def sinusoidal_code(n_tokens: int, d_model: int, base: float = 1e4) -> np.ndarray:
    """(n_tokens, d_model): sin at even, cos at odd channels, frequency base^(-2i / d_model)."""
    position = np.arange(n_tokens, dtype=np.float64)[:, None]
    frequency = base ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    code = np.zeros((n_tokens, d_model))
    code[:, 0::2] = np.sin(position * frequency)
    code[:, 1::2] = np.cos(position * frequency)[:, : d_model // 2]
    return code.astype(np.float32)


def _linear(n_in, n_out, rngs, bias=True):
    return nnx.Linear(n_in, n_out, use_bias=bias, kernel_init=_XAVIER, bias_init=_ZEROS, rngs=rngs)


class TokenEncoder(nnx.Module):
    """Linear(C -> d) -> LayerNorm -> + position code (the part every readout shares)."""

    def __init__(self, n_tokens: int, n_channels: int, cfg: ProbeConfig, rngs: nnx.Rngs):
        self.proj = _linear(n_channels, cfg.d_model, rngs)
        self.norm = nnx.LayerNorm(cfg.d_model, rngs=rngs)
        self.position = nnx.Variable(jnp.asarray(sinusoidal_code(n_tokens, cfg.d_model, cfg.position_base)))

    def __call__(self, tokens):
        return self.norm(self.proj(tokens)) + self.position[...]


class Attention(nnx.Module):
    """Multi-head attention of queries (B, Q, d) over keys/values (B, T, d), dropout on the weights."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, rngs: nnx.Rngs):
        self.n_heads = n_heads
        self.query, self.key = _linear(d_model, d_model, rngs), _linear(d_model, d_model, rngs)
        self.value, self.out = _linear(d_model, d_model, rngs), _linear(d_model, d_model, rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, queries, context):
        def heads(x):
            return x.reshape(*x.shape[:-1], self.n_heads, -1)
        q, k, v = heads(self.query(queries)), heads(self.key(context)), heads(self.value(context))
        logits = jnp.einsum("bqhd,bthd->bhqt", q, k) / math.sqrt(q.shape[-1])
        weights = self.dropout(jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype))
        mixed = jnp.einsum("bhqt,bthd->bqhd", weights, v)
        return self.out(mixed.reshape(*mixed.shape[:2], -1))


class Block(nnx.Module):
    """x + Dropout(Attention(LN(x), context or LN(x))), then optionally x + Dropout(MLP(LN(x)))."""

    def __init__(self, cfg: ProbeConfig, feed_forward: bool, rngs: nnx.Rngs):
        d = cfg.d_model
        attention_dropout = cfg.dropout if cfg.attention_dropout is None else cfg.attention_dropout
        self.norm = nnx.LayerNorm(d, rngs=rngs)
        self.attention = Attention(d, cfg.n_heads, attention_dropout, rngs)
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)
        self.ff_norm = nnx.LayerNorm(d, rngs=rngs) if feed_forward else None
        self.ff_in = _linear(d, 4 * d, rngs) if feed_forward else None
        self.ff_out = _linear(4 * d, d, rngs) if feed_forward else None

    def __call__(self, x, context=None):
        normed = self.norm(x)
        x = x + self.dropout(self.attention(normed, normed if context is None else context))
        if self.ff_norm is not None:
            x = x + self.dropout(self.ff_out(jax.nn.gelu(self.ff_in(self.ff_norm(x)), approximate=False)))
        return x


class SubjectHeads(nnx.Module):
    """One linear map per subject, stored padded: weight (S, D, N_max), bias (S, N_max)."""

    def __init__(self, n_in: int, n_targets: Sequence[int], rngs: nnx.Rngs):
        n_max = max(n_targets)
        blocks = [jnp.pad(_XAVIER(rngs.params(), (n_in, n), jnp.float32), ((0, 0), (0, n_max - n)))
                  for n in n_targets]
        self.kernel = nnx.Param(jnp.stack(blocks))
        self.bias = nnx.Param(jnp.zeros((len(n_targets), n_max), jnp.float32))
        self.n_targets = tuple(int(n) for n in n_targets)
        self.dtype, self.param_dtype = jnp.float32, jnp.float32

    def __call__(self, x, subject):
        kernel, bias = self.kernel[...][subject], self.bias[...][subject]
        return x.astype(self.dtype) @ kernel.astype(self.dtype) + bias.astype(self.dtype)


class Readout(nnx.Module):
    """One system: ``model(features, subject) -> (B, N_max)`` predictions of subject ``subject`` (index)."""

    def __init__(self, cfg: ProbeConfig, token_shape: tuple[int, int], n_targets: Sequence[int], rngs: nnx.Rngs):
        n_tokens, n_channels = token_shape
        self.cfg = cfg
        self.encoder = TokenEncoder(n_tokens, n_channels, cfg, rngs)
        self.token_block = Block(cfg, True, rngs) if cfg.readout == "attention" and cfg.token_encoder else None
        width = self._build_trunk(cfg, n_targets, rngs)
        self.heads = SubjectHeads(width, n_targets, rngs)

    def _build_trunk(self, cfg: ProbeConfig, n_targets, rngs) -> int:
        d, flat = cfg.d_model, cfg.n_queries * cfg.d_model
        if cfg.readout == "attention":
            self.queries = nnx.Param(cfg.query_std * jax.random.normal(rngs.params(), (cfg.n_queries, d)))
            self.query_block = Block(cfg, False, rngs) if cfg.query_self_attention else None
            self.cross = Block(cfg, cfg.feed_forward, rngs)
            self.final_norm = nnx.LayerNorm(d, rngs=rngs)
            return flat
        if cfg.readout == "lowrank":
            rank = cfg.rank or matched_rank(cfg, max(n_targets))
            self.down = _linear(d, rank, rngs, bias=False)
            return rank
        hidden = cfg.hidden or matched_hidden(cfg)
        self.mlp_norm = nnx.LayerNorm(d, rngs=rngs)
        self.mlp_in, self.mlp_out = _linear(d, hidden, rngs), _linear(hidden, flat, rngs)
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)
        return flat

    def features(self, tokens):
        """The input of the heads, (B, width)."""
        x = self.encoder(as_tokens(tokens))
        if self.cfg.readout == "lowrank":
            return self.down(x.mean(axis=1))
        if self.cfg.readout == "mlp":
            hidden = jax.nn.gelu(self.mlp_in(self.mlp_norm(x.mean(axis=1))), approximate=False)
            return self.mlp_out(self.dropout(hidden))
        if self.token_block is not None:
            x = self.token_block(x)
        queries = jnp.broadcast_to(self.queries[...], (x.shape[0], *self.queries.shape)).astype(x.dtype)
        if self.query_block is not None:
            queries = self.query_block(queries)
        out = self.final_norm(self.cross(queries, x))
        return out.reshape(out.shape[0], -1)

    def __call__(self, tokens, subject):
        return self.heads(self.features(tokens), subject)


# ----------------------------------------------------------------------------------------- parameter counts

def _block_count(d: int, feed_forward: bool) -> int:
    count = 2 * d + 4 * (d * d + d)
    return count + (2 * d + d * 4 * d + 4 * d + 4 * d * d + d if feed_forward else 0)


def trunk_count(cfg: ProbeConfig) -> int:
    """Parameters of the attention probe between the encoder and the heads (queries, blocks, final LN)."""
    d = cfg.d_model
    count = cfg.n_queries * d + _block_count(d, cfg.feed_forward) + 2 * d
    count += _block_count(d, False) if cfg.query_self_attention else 0
    return count + (_block_count(d, True) if cfg.token_encoder else 0)


def matched_hidden(cfg: ProbeConfig) -> int:
    """MLP width h whose trunk LN + Linear(d, h) + Linear(h, 16 d) matches the attention trunk (reference: 91)."""
    d, flat = cfg.d_model, cfg.n_queries * cfg.d_model
    return max(1, round((trunk_count(cfg) - 2 * d - flat) / (d + 1 + flat)))


def matched_rank(cfg: ProbeConfig, n_targets: int) -> int:
    """Low-rank rho with d rho + rho N + N = the attention probe's trunk and head (reference: 5330)."""
    flat = cfg.n_queries * cfg.d_model
    return max(1, round((trunk_count(cfg) + flat * n_targets) / (cfg.d_model + n_targets)))


def parameter_count(model: Readout) -> int:
    """Trained parameters of a system, the heads counted without their padding."""
    total = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
    heads = model.heads
    padded = int(np.prod(heads.kernel.shape)) + int(np.prod(heads.bias.shape))
    width = heads.kernel.shape[1]
    return total - padded + sum((width + 1) * n for n in heads.n_targets)


def build(cfg: ProbeConfig, token_shape: tuple[int, int], n_targets: Sequence[int], seed: int) -> Readout:
    """A readout system for subjects with ``n_targets`` targets each, on tokens of ``token_shape`` (T, C)."""
    if not n_targets or min(n_targets) < 1:
        raise ValueError(f"readout: every subject needs at least one target, got {list(n_targets)}")
    return Readout(cfg, tuple(int(v) for v in token_shape), list(n_targets), nnx.Rngs(params=seed, dropout=seed))


def token_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(T, C) of per-stimulus features of ``shape``: (C,), (T, C) or (H, W, C)."""
    shape = tuple(int(v) for v in shape)
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) == 2:
        return shape
    if len(shape) == 3:
        return shape[0] * shape[1], shape[2]
    raise ValueError(f"tokens: per-stimulus features must be (C,), (T, C) or (H, W, C), got {shape}")
