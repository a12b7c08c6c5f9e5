"""The prepare experiment: release folder -> validated dataset file, resumable, nothing half-written."""

import io
import json
import os
import socket
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from jaxbrain import launch
from jaxbrain.data import neural, sources
from jaxbrain.experiments import prepare


def _cowley_release(folder, seed=0):
    import zipfile

    folder.mkdir(parents=True)
    np.save(folder / "responses_raw_210325.npy", np.random.default_rng(seed).poisson(3, (3, 20, 4)).astype(float))
    with zipfile.ZipFile(folder / "images_210325.zip", "w") as zf:
        for i in range(20):
            image = io.BytesIO()
            Image.fromarray(np.full((4, 4, 3), 10 * i, np.uint8)).save(image, format="JPEG")
            zf.writestr(f"image{i + 1:04d}.jpg", image.getvalue())
    return folder


def _config(arg, **overrides):
    from configs import prepare as prepare_config

    config = prepare_config.get_config(arg)
    config.unlock()
    for key, value in overrides.items():
        config[key] = value
    return config


def test_prepare_writes_validates_and_resumes(tmp_path, monkeypatch):
    source = _cowley_release(tmp_path / "release")
    config = _config("dataset=cowley2023,test_fraction=0.25", source_dir=str(source))
    assert config.options.test_fraction == 0.25 and config.experiment == "prepare"
    summary = launch.launch(config, tmp_path / "work")
    out = tmp_path / "work" / "cowley2023_210325.h5"  # named by the dataset
    assert out.is_file() and not summary["skipped"]
    ds = neural.load(out)
    assert len(ds.ids("test", "monkey_PE")) == 5
    assert json.loads((tmp_path / "work" / "summary.json").read_text())["cowley2023_210325"]["rois"] == ["V4"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("reader called although the output is complete")

    monkeypatch.setitem(sources.READERS, "cowley2023", must_not_run)
    assert prepare.run(config, tmp_path / "work")["skipped"]


def test_prepare_redoes_a_corrupt_output_and_leaves_no_partial_file(tmp_path, monkeypatch):
    source = _cowley_release(tmp_path / "release")
    config = _config("dataset=cowley2023", source_dir=str(source))
    work = tmp_path / "work"
    prepare.run(config, work)
    out = work / "cowley2023_210325.h5"
    out.write_bytes(out.read_bytes()[:1000])  # truncated
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    (work / f".cowley2023_210325.h5.{socket.gethostname()}.{dead}.abc.tmp").write_bytes(b"left by a killed run")
    prepare.run(config, work)
    assert neural.is_valid_file(out)
    assert sorted(os.listdir(work)) == ["cowley2023_210325.h5", "cowley2023_210325.json", "summary.json"]

    def crash(*args, **kwargs):
        raise RuntimeError("killed while writing")

    config.overwrite = True
    monkeypatch.setattr(neural, "_write", crash)
    before = out.read_bytes()
    with pytest.raises(RuntimeError):
        prepare.run(config, work)
    assert out.read_bytes() == before
    assert sorted(os.listdir(work)) == ["cowley2023_210325.h5", "cowley2023_210325.json", "summary.json"]


def test_prepare_errors_are_clear(tmp_path):
    from configs import prepare as prepare_config

    with pytest.raises(ValueError, match="unknown dataset 'nope'.*known:.*nsd"):
        prepare_config.get_config("dataset=nope")
    with pytest.raises(FileNotFoundError, match="not found.*missing"):
        prepare.run(_config("dataset=cowley2023", source_dir=str(tmp_path / "missing")), tmp_path / "w")
    with pytest.raises(ValueError, match="source_dir is empty"):
        prepare.run(_config("dataset=cowley2023"), tmp_path / "w")


def test_every_reader_is_registered_with_its_options():
    from configs import prepare as prepare_config

    for name in ("cowley2023", "nsd", "things_fmri", "tvsd", "generic"):
        assert name in sources.READERS
        prepare_config.get_config(f"dataset={name}")


def _release(name, root):
    """Writes a tiny release in each reader's layout (writers shared with the reader tests)."""
    if name == "nsd":
        from test_sources_nsd import ROIS, write_release

        write_release(root, subjects=(1,))
        return f"dataset=nsd,subjects=1,rois={'+'.join(ROIS)}"
    if name == "things_fmri":
        from test_sources_things_fmri import ROIS, write_release

        write_release(root, subjects=(1, 2))
        return f"dataset=things_fmri,subjects=1+2,rois={'+'.join(ROIS)}"
    if name == "tvsd":
        from test_sources_tvsd import write_monkey

        write_monkey(root, "F")
        return "dataset=tvsd,monkeys=F"
    root.mkdir(parents=True)
    pd_stimuli = "stimulus_id\n" + "\n".join(f"s{k}" for k in range(12)) + "\n"
    (root / "stimuli.csv").write_text(pd_stimuli)
    rng = np.random.default_rng(0)
    np.save(root / "trials_p1_V4.npy", rng.normal(size=(3, 12, 1)) + rng.normal(size=(3, 12, 3)))
    return "dataset=generic,test_fraction=0.25"


@pytest.mark.parametrize("name", ["nsd", "things_fmri", "tvsd", "generic"])
def test_prepare_each_release(tmp_path, name):
    arg = _release(name, tmp_path / "release")
    config = _config(arg, source_dir=str(tmp_path / "release"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixtures without THINGS images warn about it
        summary = prepare.run(config, tmp_path / "work")
    ds = neural.load(tmp_path / "work" / f"{summary['dataset']}.h5")
    assert ds.splits == ["train", "test"] and summary["rois"] == ds.rois
