"""The launch scripts: each dry run prints the commands it would start, and a score run split over two
jax.distributed processes (started by launch/gpu_host.sh --per-gpu) writes the results of one process."""

import os
import pathlib
import shlex
import socket
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
JAXBRAIN = ["python", "-m", "jaxbrain.launch"]


def _dry_run(script: str, *args: str) -> list[list[str]]:
    out = subprocess.run(["bash", str(ROOT / "launch" / script), "--dry-run", *args], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def test_tpu_pod_runs_the_same_command_on_every_worker():
    (command,) = _dry_run("tpu_pod.sh", "--tpu", "pod-v4", "--zone", "us-central2-b", "--repo", "/opt/jax brain",
                          "configs/score.py:model=vit_s16", "/mnt/shared runs/vit", "--config.batch_size=256")
    assert command[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod-v4", "--zone", "us-central2-b",
                           "--worker=all"]
    assert command[9] == "--command"
    remote = shlex.split(command[10])
    assert remote[:3] == ["cd", "/opt/jax brain", "&&"]
    assert remote[3:] == [*JAXBRAIN, "--config", "configs/score.py:model=vit_s16", "--workdir", "/mnt/shared runs/vit",
                          "--multihost", "--config.batch_size=256"]
    (units,) = _dry_run("tpu_pod.sh", "--units", "--tpu", "pod-v4", "--zone", "z", "c.py", "w")
    assert "--multihost" not in shlex.split(units[10])  # independent hosts claim units of the shared workdir


def test_gpu_host_starts_one_process_per_gpu_around_one_coordinator():
    commands = _dry_run("gpu_host.sh", "--per-gpu", "--gpus", "3", "configs/quickstart.py", "runs/q")
    assert len(commands) == 3
    for i, command in enumerate(commands):
        assert command[:3] == ["env", f"CUDA_VISIBLE_DEVICES={i}", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9"]
        assert command[3:] == [*JAXBRAIN, "--config", "configs/quickstart.py", "--workdir", "runs/q",
                               "--coordinator", "localhost:12355", "--num-processes", "3", "--process-id", str(i)]
    (single,) = _dry_run("gpu_host.sh", "configs/quickstart.py", "runs/q")
    assert single[2:] == [*JAXBRAIN, "--config", "configs/quickstart.py", "--workdir", "runs/q"]


def test_slurm_submits_one_task_per_node():
    lines = subprocess.run(["bash", str(ROOT / "launch" / "slurm.sh"), "--dry-run", "--nodes", "4",
                            "--gpus-per-node", "8", "--partition", "gpu", "configs/quickstart.py", "/scratch/q"],
                           capture_output=True, text=True, check=True, cwd=ROOT).stdout.splitlines()
    assert shlex.split(lines[0]) == ["sbatch", "--job-name=jaxbrain", "--nodes=4", "--ntasks-per-node=1",
                                     "--time=24:00:00", "--output=/scratch/q/slurm-%j.out", "--gpus-per-node=8",
                                     "--partition=gpu"]
    assert lines[1] == "#!/usr/bin/env bash"
    assert shlex.split(lines[-1]) == ["srun", *JAXBRAIN, "--config", "configs/quickstart.py", "--workdir",
                                      "/scratch/q", "--multihost"]


@pytest.mark.parametrize("script", ["tpu_pod.sh", "slurm.sh"])
def test_missing_arguments_are_one_line_errors(script):
    done = subprocess.run(["bash", str(ROOT / "launch" / script), "--dry-run", "c.py", "w"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_write_the_results_of_one(tmp_path):
    config = ["configs/quickstart.py:scale=0.3,control=false", "--config.benchmarks=planted_ephys",
              "--config.progress=false"]
    base = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", PYTHON=sys.executable)
    one = subprocess.run([sys.executable, "-m", "jaxbrain.launch", "--config", config[0], "--workdir",
                          str(tmp_path / "one"), *config[1:]], capture_output=True, text=True, cwd=ROOT,
                         env=dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=2"), timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(["bash", "launch/gpu_host.sh", "--per-gpu", "--gpus", "2", config[0], str(tmp_path / "two"),
                          *config[1:]], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env=dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=1",
                                  JAXBRAIN_COORDINATOR_PORT=str(_free_port())))
    assert two.returncode == 0, two.stderr[-2000:]
    rows = [sorted((tmp_path / run / "results.csv").read_text().splitlines()) for run in ("one", "two")]
    assert len(rows[0]) > 50 and rows[0] == rows[1]
    assert not list((tmp_path / "two").rglob("*.tmp"))
