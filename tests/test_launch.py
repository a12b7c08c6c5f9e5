"""The command line: config loading, overrides and one-line errors."""

import pathlib
import subprocess
import sys

import pytest

from jaxbrain import launch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "jaxbrain.launch", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_help_lists_experiments():
    done = _cli("--help")
    assert done.returncode == 0
    for name in ("score", "prepare"):
        assert f"\n  {name} " in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/nope.py"], "config file not found"),
    (["--config", "configs/score.py:bogus=1"], "unknown config argument 'bogus'"),
    (["--config", "configs/score.py:seed=x"], "seed='x': expected int"),
    (["--config", "configs/score.py", "--config.batch_size=abc"], "--config.batch_size='abc': expected int"),
    (["--config", "configs/score.py", "--config.ridge.nokey=1"], "unknown config key 'ridge.nokey'"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    done = _cli(*args, "--workdir", str(tmp_path))
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_overrides_are_typed():
    config = launch.load_config(str(ROOT / "configs/score.py:model=tiny_cnn,seed=3"))
    launch.apply_override(config, "batch_size", "7")
    launch.apply_override(config, "ridge.alpha_per_target", "true")
    launch.apply_override(config, "benchmarks", "a.h5+b.h5")
    assert config.batch_size == 7 and config.ridge.alpha_per_target is True
    assert config.benchmarks == ("a.h5", "b.h5")
    assert config.models.tiny_cnn.seed == 3
    with pytest.raises(launch.LaunchError, match="unknown config key"):
        launch.apply_override(config, "models.nothere.seed", "1")


def test_missing_benchmark_file_is_reported(tmp_path):
    done = _cli("--config", "configs/score.py", "--config.benchmarks=/nonexistent/data.h5", "--workdir",
                str(tmp_path))
    assert done.returncode == 2
    assert "benchmark file not found: /nonexistent/data.h5" in done.stderr
