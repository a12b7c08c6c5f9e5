"""Runs you can trust: results belong to the settings that made them, changed inputs are caught, faults are one
clear line, and kills, concurrent runs and full disks lose nothing."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from jaxbrain import launch, results
from jaxbrain.data import neural, prepare

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config", "configs/quickstart.py:scale=0.1,control=false", "--config.benchmarks=planted_ephys",
        "--config.models.tiny_cnn_generator.layers=conv1+conv3",
        "--config.progress=false", "--config.similarity=false"]
GENERATOR_ONLY = {"generator": {"name": "tiny_cnn", "weights": "", "seed": 0, "layers": ("conv1", "conv3")}}
KILL_DRIVER = """
import os, signal, sys
count = {"n": 0}
kill_at = int(sys.argv[1])
real_replace = os.replace
def replace(src, dst):
    count["n"] += 1
    if count["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
os.replace = replace
from jaxbrain import launch
code = launch.main(sys.argv[2:])
print("renames", count["n"])
sys.exit(code)
"""


def _tiny_config(**overrides):
    config = launch.load_config(str(ROOT / "configs/quickstart.py:scale=0.1"))
    with config.unlocked():
        config.benchmarks = ("planted_ephys",)
        config.progress = False
        config.similarity = False
        config.models = GENERATOR_ONLY
        for key, value in overrides.items():
            launch.apply_override(config, key, value)
    return config


def _killed_run(kill_at, workdir):
    return subprocess.run([sys.executable, "-c", KILL_DRIVER, str(kill_at), *TINY, "--workdir", str(workdir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


OUTPUTS = ("results.csv", "summary.json", "summary.txt")


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """The tiny run, uninterrupted, in a subprocess; returns its workdir and the number of file renames."""
    workdir = tmp_path_factory.mktemp("clean")
    done = _killed_run(0, workdir)
    assert done.returncode == 0, done.stderr
    return workdir, int(done.stdout.split("renames")[-1])


def test_kill_at_seeded_points_then_resume_is_byte_identical(clean_run, tmp_path):
    reference, renames = clean_run
    rng = np.random.default_rng(0)
    first = int(rng.integers(2, renames // 2))  # while generating data or features
    second = int(rng.integers(2, (renames - first) // 2 + 3))  # counted in the resumed run: while scoring
    workdir = tmp_path / "killed"
    for point in (first, second):
        assert _killed_run(point, workdir).returncode == -signal.SIGKILL
    done = _killed_run(0, workdir)
    assert done.returncode == 0, done.stderr
    for name in OUTPUTS:
        assert (workdir / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(workdir.rglob("*.tmp")) and not list(workdir.rglob("*.claim*"))


def test_two_identical_runs_started_together_cooperate(clean_run, tmp_path):
    reference, _ = clean_run
    workdir = tmp_path / "shared"
    runs = [subprocess.Popen([sys.executable, "-m", "jaxbrain.launch", *TINY, "--workdir", str(workdir)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    for name in ("results.csv", "summary.json"):
        assert (workdir / name).read_bytes() == (reference / name).read_bytes(), name


def test_changed_settings_score_anew_beside_the_old_ones(tmp_path):
    launch.launch(_tiny_config(), tmp_path)
    first = results.read_table(tmp_path)
    summary = launch.launch(_tiny_config(**{"cv.n_splits": "3"}), tmp_path)
    table = results.read_table(tmp_path)
    assert table["fingerprint"].nunique() == 2 and len(table) == 2 * len(first)
    assert sorted(table["scoring.n_splits"].unique()) == [3, 5]
    assert json.loads((tmp_path / "config.json").read_text())["cv"]["n_splits"] == 3
    new = table[(table["scoring.n_splits"] == 3) & (table.stage == "test") & (table.subject == "all")
                & (table.metric == "r_nc")]
    assert summary["generator"]["benchmarks"]["planted_ephys"]["rois"]["V1"]["r_nc"] == \
        pytest.approx(float(new[new.roi == "V1"].value.iloc[0]))
    with pytest.raises(ValueError, match=r"other settings \(.*scoring.n_splits: [35] -> 4"):
        launch.launch(_tiny_config(**{"cv.n_splits": "4", "on_change": "refuse"}), tmp_path)


def test_other_weights_under_the_same_name_are_other_scores(tmp_path, realdata):
    weights = realdata / "cifar10_resnet_akamaster/weights/resnet20-12fca82f.th"
    summaries = []
    for path in ("", str(weights)):
        config = _tiny_config()
        with config.unlocked():
            config.models = {"resnet20": {"name": "cifar_resnet20", "weights": path, "seed": 0,
                                          "layers": ("layer1.2", "layer3.2")}}
        summaries.append(launch.launch(config, tmp_path)["resnet20"]["score"])
    assert summaries[0] != summaries[1]
    assert results.read_table(tmp_path)["model.weights_digest"].nunique(dropna=False) == 2


def test_a_changed_response_is_caught(tmp_path):
    launch.launch(_tiny_config(), tmp_path / "run")
    path = tmp_path / "copy.h5"
    path.write_bytes((tmp_path / "run/data/planted_ephys.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        f["train/neural_data/monkey_a/V4"][0] = f["train/neural_data/monkey_a/V4"][1]
    with pytest.raises(neural.NeuralDataError, match="train/neural_data/monkey_a/V4 does not match the checksum"):
        neural.load(path)


def _generic_folder(folder: pathlib.Path, seed: int, broken: tuple[int, ...] = ()):
    rng = np.random.default_rng(seed)
    ids = [f"im{k:02d}" for k in range(30)]
    folder.mkdir(parents=True)
    pd.DataFrame({"stimulus_id": ids}).to_csv(folder / "stimuli.csv", index=False)
    np.save(folder / "trials_s1_V1.npy", rng.normal(size=(4, 30, 1)) + 0.3 * rng.normal(size=(4, 30, 3)))
    (folder / "images").mkdir()
    for k, stimulus_id in enumerate(ids):
        target = folder / "images" / f"{stimulus_id}.png"
        if k in broken:
            target.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(target)


def test_releases_are_named_by_their_dataset_and_take_options(tmp_path):
    _generic_folder(tmp_path / "a", 0)
    _generic_folder(tmp_path / "b", 1)
    data = tmp_path / "data"
    faces = prepare.load_entry(f"generic:{tmp_path / 'a'}?name=faces&test_fraction=0.2", data)
    places = prepare.load_entry(f"generic:{tmp_path / 'b'}?name=places", data)
    assert (faces.name, places.name) == ("faces", "places")
    assert len(faces.ids("test", "s1")) == 6 and len(places.ids("test", "s1")) == 3
    assert sorted(p.name for p in data.glob("*.h5")) == ["faces.h5", "places.h5"]
    assert prepare.load_entry(f"generic:{tmp_path / 'a'}?name=faces&test_fraction=0.2", data).digest == faces.digest
    with pytest.raises(ValueError, match="has no option 'nmae'"):
        prepare.parse_entry(f"generic:{tmp_path / 'a'}?nmae=x")
    config = _tiny_config()
    with config.unlocked():
        config.benchmarks = (f"generic:{tmp_path / 'a'}", f"generic:{tmp_path / 'b'}")
    with pytest.raises(ValueError, match="two benchmarks are named 'generic'"):
        launch.launch(config, tmp_path / "run")


def _main(capsys, *args) -> tuple[int, str]:
    code = launch.main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_every_undecodable_image_is_named(tmp_path, capsys):
    _generic_folder(tmp_path / "src", 0, broken=(3, 17))
    code, err = _main(capsys, "--config", "configs/prepare.py:dataset=generic",
                      f"--config.source_dir={tmp_path / 'src'}", "--workdir", tmp_path / "out")
    assert code == 2
    assert "2 stimulus image(s) cannot be decoded" in err
    assert "im03" in err and "im17" in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("*.h5"))


@pytest.mark.parametrize("args, message", [
    (["--config.planted.scale=0"], "planted scale must be > 0, got 0.0"),
    (["--config.benchmarks=/nonexistent/data.h5"], "benchmark file not found: /nonexistent/data.h5"),
])
def test_user_errors_are_one_line(tmp_path, capsys, args, message):
    code, err = _main(capsys, *TINY, *args, "--workdir", tmp_path)
    assert code == 2
    assert err.strip().splitlines() == [f"error: {message}"], err


def test_workdir_faults_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = _main(capsys, *TINY, "--workdir", tmp_path / "file")
    assert code == 2 and err.strip() == f"error: workdir {tmp_path / 'file'} is a file, not a folder"


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch, capsys):
    real = results._atomic_write
    calls = {"n": 0}

    def full(path, write, binary=False):
        calls["n"] += 1
        if calls["n"] == 6:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write, binary)

    monkeypatch.setattr(results, "_atomic_write", full)
    code, err = _main(capsys, *TINY, "--workdir", tmp_path)
    assert code == 2
    assert "error: no space left on the device while writing" in err
    assert not list(tmp_path.rglob("*.tmp"))


def test_ctrl_c_exits_130_with_a_hint(tmp_path):
    run = subprocess.Popen([sys.executable, "-m", "jaxbrain.launch", *TINY, "--workdir", str(tmp_path)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "log.txt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130
    assert err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert "Traceback" not in err


def test_outputs_are_readable_by_the_group(clean_run):
    workdir, _ = clean_run
    for name in (*OUTPUTS, "config.json"):
        assert (workdir / name).stat().st_mode & 0o044 == 0o044, name
