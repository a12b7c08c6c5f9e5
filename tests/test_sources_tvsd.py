"""TVSD reader on fixture files in the release's MATLAB v7.3 layout (1024 channels, few images)."""

import dataclasses

import h5py
import numpy as np
import pytest

from jaxbrain.data import neural
from jaxbrain.data.neural import NeuralDataError
from jaxbrain.data.sources import tvsd


def _write_cellstr(f, group, name, strings):
    refs = f.require_group("#refs#")
    out = []
    for k, s in enumerate(strings):
        d = refs.create_dataset(f"{group}_{name}_{k}", data=np.array([ord(c) for c in s], np.uint16)[:, None])
        out.append(d.ref)
    f.require_group(group).create_dataset(name, data=np.array(out, dtype=h5py.ref_dtype)[None, :])


def write_monkey(folder, monkey, n_train=12, n_test=6, reps=5, seed=0, windows_paths=False):
    rng = np.random.default_rng(seed)
    d = folder / f"monkey{monkey}"
    (d / "_logs").mkdir(parents=True)
    train_paths = [f"c{k}/c{k}_01b.jpg" for k in range(n_train)]
    test_paths = [f"t{k}/t{k}_02s.jpg" for k in range(n_test)]
    with h5py.File(d / "_logs" / "things_imgs.mat", "w") as f:
        sep = "\\" if windows_paths else "/"
        windows = [f"C:{sep}THINGS{sep}" + p.replace("/", sep) for p in train_paths]
        _write_cellstr(f, "train_imgs", "things_path", windows)
        _write_cellstr(f, "test_imgs", "things_path", test_paths)
    signal = rng.normal(size=(n_test, 1024))
    test_reps = signal[None] + 0.8 * rng.normal(size=(reps, n_test, 1024))
    train = rng.normal(size=(n_train, 1024))
    reliab = rng.uniform(0.2, 0.9, size=(reps * (reps - 1) // 2, 1024))
    reliab[:, 5] = 0.05          # a V1 channel below threshold
    reliab[0, 6] = np.nan        # a NaN pair makes the mean NaN: dropped, as the reference's plain mean does
    # reliable by `reliab`, but repeats that flip sign: noise variance > 1, so a ceiling of 0 %
    test_reps[:, :, 7] = (-1.0) ** np.arange(reps)[:, None] * rng.normal(size=n_test)
    with h5py.File(d / "THINGS_normMUA.mat", "w") as f:
        f["train_MUA"] = train
        f["test_MUA_reps"] = test_reps
        f["test_MUA"] = test_reps.mean(0)
        f["reliab"] = reliab
    return {"train": train, "reps": test_reps, "train_paths": train_paths, "test_paths": test_paths}


def _reference_nc(trials):
    """float64 transcription: z-score each (channel, repeat) over images, NC = 100 snr / (snr + 1/n)."""
    z = (trials - trials.mean(1, keepdims=True)) / trials.std(1, keepdims=True)
    noise = z.var(axis=2, ddof=1).mean(1)
    snr = np.maximum(1 - noise, 0) / noise
    return 100 * snr / (snr + 1 / trials.shape[2])


def test_reads_release_layout(tmp_path):
    info = {m: write_monkey(tmp_path, m, seed=i, windows_paths=(m == "F")) for i, m in enumerate("FN")}
    with pytest.warns(UserWarning, match="no THINGS image folder"):
        ds = tvsd.load_tvsd(tmp_path)
    assert ds.subjects == ["monkeyN", "monkeyF"] and ds.rois == ["V1", "V4", "IT"] and ds.modality == "ephys"
    assert list(ds.ids("test", "monkeyN")) == [f"t{k}_02s" for k in range(6)]
    assert list(ds.ids("train", "monkeyF")) == [f"c{k}_01b" for k in range(12)]
    ranges = {"F": {"V1": (0, 512), "V4": (832, 1024), "IT": (512, 832)},
              "N": {"V1": (0, 512), "V4": (512, 768), "IT": (768, 1024)}}
    for m, roi_ranges in ranges.items():
        for roi, (a, b) in roi_ranges.items():
            ch = [c for c in range(a, b) if c not in (5, 6)]
            np.testing.assert_allclose(ds.targets("train", f"monkey{m}", roi), info[m]["train"][:, ch], rtol=1e-6)
            np.testing.assert_allclose(ds.targets("test", f"monkey{m}", roi), info[m]["reps"].mean(0)[:, ch],
                                       rtol=1e-5, atol=1e-6)
            trials = np.transpose(info[m]["reps"], (2, 1, 0))[ch]
            np.testing.assert_allclose(ds.ceiling(f"monkey{m}", roi), _reference_nc(trials), rtol=1e-8)
    assert ds.targets("train", "monkeyN", "V1").shape == (12, 510)


def test_only_the_released_reliability_filter_applies(tmp_path):
    write_monkey(tmp_path, "N")
    with pytest.warns(UserWarning, match="no THINGS image folder"):
        ds = tvsd.load_tvsd(tmp_path, monkeys=("N",))
    nc = ds.ceiling("monkeyN", "V1")
    assert ds.target_filter == "released" and nc[5] == 0           # channel 7 is the 6th kept V1 channel
    assert ds.scored_targets("monkeyN", "V1", min_ceiling=10.0).all()
    path = neural.save(ds, tmp_path / "tvsd.h5")
    assert neural.load(path).scored_targets("monkeyN", "V1").all()
    generic = dataclasses.replace(ds, target_filter=None)          # what the NC >= 10 % rule would drop
    assert not generic.scored_targets("monkeyN", "V1")[5]


def test_images_folder(tmp_path):
    from PIL import Image

    info = write_monkey(tmp_path, "N")
    for p in info["train_paths"] + info["test_paths"]:
        (tmp_path / "object_images" / p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((3, 3, 3), 9, np.uint8)).save(tmp_path / "object_images" / p)
    ds = tvsd.load_tvsd(tmp_path, monkeys=("N",))
    assert ds.stimuli.load("t3_02s")[0, 0, 0] == 9


@pytest.mark.parametrize("fault, message", [
    ("channels", "monkeyN/THINGS_normMUA.mat: train_MUA shape \\(12, 1000\\), expected \\(12 images"),
    ("one_rep", "test_MUA_reps has 1 repeat"),
    ("no_reliab", "missing variable 'reliab'"),
    ("nan", "train_MUA has 1 NaN/inf"),
    ("no_logs", "things_imgs.mat"),
])
def test_malformed_release(tmp_path, fault, message):
    info = write_monkey(tmp_path, "N")
    path = tmp_path / "monkeyN" / "THINGS_normMUA.mat"
    if fault == "no_logs":
        (tmp_path / "monkeyN" / "_logs" / "things_imgs.mat").unlink()
    else:
        with h5py.File(path, "a") as f:
            if fault == "channels":
                del f["train_MUA"]
                f["train_MUA"] = info["train"][:, :1000]
            if fault == "one_rep":
                del f["test_MUA_reps"]
                f["test_MUA_reps"] = info["reps"][:1]
            if fault == "no_reliab":
                del f["reliab"]
            if fault == "nan":
                f["train_MUA"][0, 3] = np.nan
    with pytest.raises((NeuralDataError, FileNotFoundError), match=message):
        tvsd.load_tvsd(tmp_path, monkeys=("N",))
