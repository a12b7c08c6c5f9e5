"""The same training code under jax.distributed: two CPU processes reach the parameters of one process."""

import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent('''
    import os, sys
    import jax
    workdir, process_id, n_processes, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if n_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=n_processes,
                                   process_id=process_id)
    import numpy as np
    from flax import nnx
    from jaxbrain import sharding
    from jaxbrain.models import registry
    from jaxbrain.train import batches, loop, optim, tasks
    from jaxbrain.train import mesh as mesh_lib
    from jaxbrain.train.checkpoint import Checkpointer
    from jaxbrain.train.step import Trainer

    rng = np.random.default_rng(0)
    arrays = {"image": rng.normal(size=(32, 16, 16, 3)).astype(np.float32),
              "label": rng.integers(0, 10, 32).astype(np.int32)}
    mesh = mesh_lib.make_mesh(fsdp=jax.device_count())
    opt = optim.OptimizerConfig(lr=3e-3, total_steps=6, warmup_steps=2, weight_decay=0.05)
    model = registry.get("tiny_cnn").build(rngs=nnx.Rngs(0), num_classes=10)
    trainer = Trainer(model, optim.adamw(opt), tasks.classification_loss, mesh, schedule=optim.schedule(opt),
                      rules=(".*=auto",))
    data = batches.array_batches(arrays, 8, mesh_lib.process_rows(mesh, 8), seed=1)
    checkpointer = Checkpointer(os.path.join(workdir, "ckpt"), {"run": "distributed"}, keep=1)
    state, _ = loop.fit(trainer, {"train": batches.iterate(data)}, lambda b: mesh_lib.global_batch(b["train"], mesh),
                        workdir=workdir, checkpointer=checkpointer,
                        loop=loop.LoopConfig(total_steps=6, steps_per_epoch=3, images_per_step=8, progress=False))
    checkpointer.close()
    sharded = [str(s.spec) for s in jax.tree.leaves(trainer.shardings["params"]) if s.spec != ()]
    flat = {mesh_lib.path_name(p): sharding.to_host(v) for p, v in
            jax.tree_util.tree_flatten_with_path(state["params"])[0]}
    np.savez(os.path.join(workdir, f"final{process_id}.npz"), n_sharded=len(sharded), **flat)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(script, workdir, process_id, n_processes, port):
    env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, str(script), str(workdir), str(process_id), str(n_processes), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def test_two_processes_match_one(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    port = _free_port()
    procs = [_launch(script, tmp_path / "two", i, 2, port) for i in range(2)]
    procs.append(_launch(script, tmp_path / "one", 0, 1, port))
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    one = np.load(tmp_path / "one" / "final0.npz")
    two = [np.load(tmp_path / "two" / f"final{i}.npz") for i in range(2)]
    assert int(two[0]["n_sharded"]) > 0  # parameters really were split over the two processes
    names = [n for n in one.files if n != "n_sharded"]
    assert names and sorted(names) == sorted(n for n in two[0].files if n != "n_sharded")
    for name in names:
        for result in two:
            np.testing.assert_allclose(result[name], one[name], rtol=1e-6, atol=1e-7, err_msg=name)
    logged = (tmp_path / "two" / "train_metrics.csv").read_text().strip().splitlines()
    assert len(logged) == 7  # one writer: header + 6 steps, no duplicates
    assert sorted(p.name for p in (tmp_path / "two" / "ckpt").iterdir() if p.name.isdigit()) == ["6"]
