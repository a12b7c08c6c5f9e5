"""Checkpoints: a run killed at a step resumes bit for bit; damaged or mismatched checkpoints are refused."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import optax
import pytest
from flax import nnx

from jaxbrain.models import registry
from jaxbrain.train import batches, tasks
from jaxbrain.train import mesh as mesh_lib
from jaxbrain.train.checkpoint import CheckpointError, Checkpointer
from jaxbrain.train.step import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent('''
    import os, sys, time
    import numpy as np
    from flax import nnx
    from jaxbrain.models import registry
    from jaxbrain.train import batches, loop, optim, tasks
    from jaxbrain.train import mesh as mesh_lib
    from jaxbrain.train.checkpoint import Checkpointer
    from jaxbrain.train.step import Trainer

    workdir, delay = sys.argv[1], float(sys.argv[2])
    rng = np.random.default_rng(0)
    arrays = {"image": rng.normal(size=(48, 16, 16, 3)).astype(np.float32),
              "label": rng.integers(0, 10, 48).astype(np.int32)}
    mesh = mesh_lib.make_mesh()
    total = 12
    opt = optim.OptimizerConfig(lr=3e-3, total_steps=total, warmup_steps=3, weight_decay=0.05)
    model = registry.get("tiny_cnn").build(rngs=nnx.Rngs(0), num_classes=10)
    trainer = Trainer(model, optim.adamw(opt), tasks.classification_loss, mesh, schedule=optim.schedule(opt))
    data = batches.array_batches(arrays, 8, mesh_lib.process_rows(mesh, 8), seed=3)
    checkpointer = Checkpointer(os.path.join(workdir, "ckpt"), {"lr": 3e-3}, keep=2)

    def hook(step, state):
        print("step", step, flush=True)
        time.sleep(delay)

    state, _ = loop.fit(trainer, {"train": batches.iterate(data)}, lambda b: mesh_lib.global_batch(b["train"], mesh),
                        workdir=workdir, checkpointer=checkpointer, hooks=[hook],
                        loop=loop.LoopConfig(total_steps=total, steps_per_epoch=6, images_per_step=8,
                                             checkpoint_every=1, progress=False))
    checkpointer.close()
    flat = {mesh_lib.path_name(p): np.asarray(v) for p, v in
            __import__("jax").tree_util.tree_flatten_with_path(state)[0]}
    np.savez(os.path.join(workdir, "final.npz"), **flat)
''')


def _child(script, workdir, delay=0.0):
    env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, str(script), str(workdir), str(delay)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def _finish(proc):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]


def test_killed_run_resumes_bit_for_bit(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _finish(_child(script, whole))
    proc = _child(script, killed, delay=0.5)
    for line in proc.stdout:
        if line.strip() == "step 5":
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final.npz").exists()
    _finish(_child(script, killed))
    a, b = np.load(whole / "final.npz"), np.load(killed / "final.npz")
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    logged = [np.genfromtxt(d / "train_metrics.csv", delimiter=",", names=True) for d in (whole, killed)]
    np.testing.assert_array_equal(logged[0]["step"], np.arange(1, 13))
    np.testing.assert_array_equal(logged[0]["loss"], logged[1]["loss"])


def _trainer(num_classes=10):
    model = registry.get("tiny_cnn").build(rngs=nnx.Rngs(0), num_classes=num_classes)
    return Trainer(model, optax.adam(1e-3), tasks.classification_loss, mesh_lib.make_mesh())


@pytest.fixture
def saved(tmp_path):
    trainer = _trainer()
    data = batches.iterate(batches.array_batches({"x": np.arange(8.0)}, 4, (0, 4), seed=0))
    checkpointer = Checkpointer(tmp_path / "ckpt", {"lr": 1e-3, "model": "tiny_cnn"}, async_save=False)
    checkpointer.save(1, trainer.init_state(), {"train": data}, force=True)
    checkpointer.close()
    return tmp_path / "ckpt", data


def _restore(directory, data, settings=None, num_classes=10):
    checkpointer = Checkpointer(directory, settings or {"lr": 1e-3, "model": "tiny_cnn"}, async_save=False)
    return checkpointer.restore(_trainer(num_classes).abstract_state(), {"train": data})


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_restore_round_trip(saved):
    state, step = _restore(*saved)
    assert step == 1 and state is not None


def test_other_settings_are_refused(saved):
    with pytest.raises(CheckpointError) as err:
        _restore(*saved, settings={"lr": 1e-2, "model": "tiny_cnn"})
    text = _one_line(err)
    assert "setting lr: checkpoint 0.001, this run 0.01" in text and str(saved[0] / "1") in text


def test_other_model_is_refused(saved):
    with pytest.raises(CheckpointError) as err:
        _restore(*saved, num_classes=5)
    text = _one_line(err)
    assert "does not match this model" in text and "params/head/kernel" in text and "[64, 10]" in text


def _state_files(directory):
    return sorted(p for p in (directory / "1" / "state").rglob("*") if p.is_file() and p.stat().st_size > 64)


def test_damaged_checkpoint_is_refused(saved):
    for path in _state_files(saved[0]):
        path.write_bytes(b"\0" * path.stat().st_size)
    with pytest.raises(CheckpointError) as err:
        _restore(*saved)
    assert "is damaged or incomplete" in _one_line(err)


def test_partial_checkpoint_is_refused(saved):
    shutil.rmtree(saved[0] / "1" / "state")
    with pytest.raises(CheckpointError) as err:
        _restore(*saved)
    assert "is damaged or incomplete" in _one_line(err)
