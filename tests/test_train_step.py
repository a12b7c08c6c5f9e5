"""The train step: schedule, sharding rules, gradients against a direct reference, accumulation, bf16, LoRA."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxbrain.models import lora, registry, vit
from jaxbrain.train import mesh as mesh_lib
from jaxbrain.train import optim, tasks
from jaxbrain.train.step import Trainer


def test_schedule_matches_the_formula():
    cfg = optim.OptimizerConfig(lr=1e-3, min_lr=1e-5, warmup_steps=5, total_steps=25)
    lr = optim.schedule(cfg)
    for t in range(26):
        if t < 5:
            expected = 1e-3 * t / 5
        else:
            expected = 1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * (t - 5) / 20)) / 2
        assert float(lr(t)) == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_sharding_rules():
    mesh = mesh_lib.make_mesh(fsdp=2)
    rules = mesh_lib.parse_rules([".*head/kernel=-,fsdp", ".*bias=replicate", ".*=auto"])
    assert mesh_lib.spec_for("params/head/kernel", (8, 6), rules, mesh) == P(None, "fsdp")
    assert mesh_lib.spec_for("params/fc/bias", (4096,), rules, mesh) == P()
    assert mesh_lib.spec_for("params/fc/kernel", (64, 512), rules, mesh, min_size=1000) == P(None, "fsdp")
    assert mesh_lib.spec_for("params/fc/kernel", (3, 5), rules, mesh, min_size=1) == P()  # nothing divisible
    with pytest.raises(ValueError, match="spec must be"):
        mesh_lib.parse_rules([".*=model"])
    with pytest.raises(ValueError, match="not divisible"):
        mesh_lib.spec_for("params/head/kernel", (8, 5), rules, mesh)


def _sgd_trainer(model, mesh, **kw):
    return Trainer(model, optax.sgd(0.1), tasks.classification_loss, mesh, **kw)


def _batch(n=16, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(n, size, size, 3)).astype(np.float32),
            "label": rng.integers(0, 10, n).astype(np.int32)}


@pytest.mark.parametrize("fsdp,accum", [(1, 1), (2, 2)])
def test_step_applies_the_direct_gradient(fsdp, accum):
    """One SGD step equals params - lr * grad of the mean cross-entropy computed directly with jax.grad."""
    spec = registry.get("tiny_cnn")
    model = spec.build(rngs=nnx.Rngs(0), num_classes=10)
    graphdef, params = nnx.split(model, nnx.Param)
    batch = _batch()

    def loss(p):
        logits, _ = nnx.merge(graphdef, p)(jnp.asarray(batch["image"]))
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    grads = jax.grad(loss)(params)
    expected = jax.tree.map(lambda p, g: np.asarray(p) - 0.1 * np.asarray(g), params, grads)
    mesh = mesh_lib.make_mesh(fsdp=fsdp)
    trainer = _sgd_trainer(model, mesh, accum_steps=accum, rules=(".*kernel=auto",))
    state, metrics = trainer.step(trainer.init_state(), mesh_lib.global_batch(batch, mesh))
    got = jax.tree.map(np.asarray, state["params"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), got, expected)
    assert float(metrics["loss"]) == pytest.approx(float(loss(params)), rel=1e-5)
    assert Trainer.step_count(state) == 1


def test_bfloat16_compute_keeps_float32_masters():
    spec = registry.get("tiny_cnn")
    batch = _batch(8, 16)
    mesh = mesh_lib.make_mesh()
    losses = {}
    for dtype in ("float32", "bfloat16"):
        trainer = _sgd_trainer(spec.build(rngs=nnx.Rngs(0), num_classes=10), mesh, compute_dtype=dtype)
        state, metrics = trainer.step(trainer.init_state(), mesh_lib.global_batch(batch, mesh))
        assert {leaf.dtype for leaf in jax.tree.leaves(state["params"])} == {jnp.dtype("float32")}
        losses[dtype] = float(metrics["loss"])
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=3e-2)


def test_topk_hits_against_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 12)).astype(np.float32)
    labels = rng.integers(0, 12, 50)
    for k in (1, 5):
        expected = [labels[i] in np.argsort(-logits[i], kind="stable")[:k] for i in range(50)]
        got = np.asarray(tasks.topk_hits(jnp.asarray(logits), jnp.asarray(labels), k))
        np.testing.assert_array_equal(got, np.asarray(expected, np.float32))


def _tiny_vit():
    return vit.build("Ti/4", nnx.Rngs(0), num_classes=10, img_size=16, depth=2)


def test_lora_trains_only_adapters_and_head_and_merges_exactly():
    model = _tiny_vit()
    x = jnp.asarray(_batch(4)["image"])
    reference = np.asarray(model(x)[0])
    lora.apply_lora(model, rank=8)
    np.testing.assert_array_equal(np.asarray(model(x)[0]), reference)  # B = 0: the base model at start
    counts = lora.parameter_counts(model)
    width, mlp, depth, r = 192, 768, 2, 8
    adapters = depth * r * ((width + 3 * width) + (width + mlp) + (mlp + width))
    assert counts["trainable"] == adapters + width * 10 + 10
    mesh = mesh_lib.make_mesh()
    trainer = Trainer(model, optax.adamw(1e-2), tasks.classification_loss, mesh, wrt=lora.trainable_filter())
    opt_paths = {mesh_lib.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(trainer.initial_state["opt"])[0]}
    moments = [p for p in opt_paths if "/mu/" in p]
    assert moments and all(("lora_" in p) or ("/head/" in p) for p in moments)
    state = trainer.init_state()
    base_before = np.asarray(state["frozen"]["blocks"][0]["attn"]["qkv"]["base"]["kernel"][...])
    batch = mesh_lib.global_batch(_batch(8), mesh)
    for _ in range(3):
        state, _ = trainer.step(state, batch)
    np.testing.assert_array_equal(np.asarray(state["frozen"]["blocks"][0]["attn"]["qkv"]["base"]["kernel"][...]),
                                  base_before)
    adapted = trainer.host_model(state)
    adapted.eval()
    merged = lora.merge(adapted)
    assert isinstance(merged.blocks[0].attn.qkv, nnx.Linear)
    out_adapted, out_merged = np.asarray(adapted(x)[0]), np.asarray(merged(x)[0])
    assert np.abs(out_adapted - reference).max() > 1e-3  # training changed the model
    np.testing.assert_allclose(out_merged, out_adapted, rtol=1e-5, atol=1e-5)
