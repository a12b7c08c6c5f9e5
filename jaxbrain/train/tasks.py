"""Supervised classification: the loss the step minimises and the top-k counts evaluation sums.

Loss: softmax cross-entropy in float32 against the integer ``label``, or against ``label_probs`` when the input
pipeline mixed or smoothed labels (the DeiT recipe). Evaluation counts, over the rows whose ``mask`` is True
(padding rows of the last batch are False): top-1 and top-5 hits (a row is a top-k hit when its label is among
the k largest logits; ties broken by position, as ``torch.topk``) and the summed cross-entropy, so per-epoch
accuracy is an exact ratio of sums over batches of any size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, batch: dict) -> jax.Array:
    """Per-row cross-entropy (float32) with ``label_probs`` when present, else the integer ``label``."""
    logits = logits.astype(jnp.float32)
    if "label_probs" in batch:
        return optax.softmax_cross_entropy(logits, batch["label_probs"].astype(jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])


def topk_hits(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the ``k`` highest logits (ties: the earlier class ranks higher)."""
    k = min(k, logits.shape[-1])
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    classes = jnp.arange(logits.shape[-1])
    above = (logits > label_logit) | ((logits == label_logit) & (classes[None, :] < labels[:, None]))
    return (above.sum(-1) < k).astype(jnp.float32)


def classification_loss(model, batch: dict, frozen=None):
    """``loss_fn`` for :class:`~jaxbrain.train.step.Trainer`: mean cross-entropy, with top-1 on the batch."""
    del frozen
    logits, _ = model(batch["image"], train=True)
    return cross_entropy(logits, batch).mean(), {"top1": topk_hits(logits.astype(jnp.float32),
                                                                   batch["label"], 1).mean()}


def classification_counts(model, batch: dict, frozen=None) -> dict:
    """``eval_fn``: summed cross-entropy, top-1 and top-5 hits and the number of real rows of one batch."""
    del frozen
    logits, _ = model(batch["image"], train=False)
    logits = logits.astype(jnp.float32)
    mask = batch["mask"].astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return {"loss": (ce * mask).sum(), "top1": (topk_hits(logits, batch["label"], 1) * mask).sum(),
            "top5": (topk_hits(logits, batch["label"], 5) * mask).sum(), "n": mask.sum()}


def summarise_counts(totals: dict) -> dict:
    """Summed counts -> mean loss, top-1 and top-5 accuracy (fractions)."""
    n = max(float(totals["n"]), 1.0)
    return {"loss": float(totals["loss"]) / n, "top1": float(totals["top1"]) / n, "top5": float(totals["top5"]) / n}
