"""StimulusSet: folder, zip, HDF5 brick and in-memory backends; HDF5 round trips; clear errors."""

import pickle
import zipfile

import h5py
import numpy as np
import pytest
from PIL import Image

from jaxbrain.data.stimulus_set import StimulusError, StimulusSet


def _images(n=3, size=(6, 5), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *size, 3), dtype=np.uint8)


def _write_pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for k, im in enumerate(images):
        Image.fromarray(im).save(folder / f"img{k}.png")


def test_folder_defaults_to_sorted_stems_and_decodes_rgb(tmp_path):
    images = _images()
    _write_pngs(tmp_path / "f", images)
    Image.fromarray(images[0][..., 0]).save(tmp_path / "f" / "gray.png")  # grayscale becomes RGB
    s = StimulusSet.from_folder(tmp_path / "f")
    assert s.ids == ["gray", "img0", "img1", "img2"]
    assert len(s) == 4 and "img1" in s
    np.testing.assert_array_equal(s.load("img1"), images[1])
    gray = s.load("gray")
    assert gray.shape == (6, 5, 3) and gray.dtype == np.uint8
    np.testing.assert_array_equal(gray[..., 2], images[0][..., 0])


def test_zip_with_explicit_members_and_order(tmp_path):
    images = _images()
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as zf:
        for k, im in enumerate(images):
            Image.fromarray(im).save(tmp_path / "t.png")
            zf.write(tmp_path / "t.png", f"image{k + 1:04d}.png")
    s = StimulusSet.from_zip(tmp_path / "s.zip", ids=["c", "a"], members=["image0003.png", "image0001.png"])
    assert s.ids == ["c", "a"]
    np.testing.assert_array_equal(s.load("a"), images[0])
    np.testing.assert_array_equal(s.load_many(["c", "a"]), images[[2, 0]])
    clone = pickle.loads(pickle.dumps(s))  # open handles are not pickled
    np.testing.assert_array_equal(clone.load("c"), images[2])


def test_brick_rows_and_default_ids(tmp_path):
    images = _images(5)
    with h5py.File(tmp_path / "nsd_stimuli.hdf5", "w") as f:
        f["imgBrick"] = images
    s = StimulusSet.from_brick(tmp_path / "nsd_stimuli.hdf5", indices=[4, 1])
    assert s.ids == ["4", "1"]
    np.testing.assert_array_equal(s.load("1"), images[1])


@pytest.mark.parametrize("embed", [False, True])
@pytest.mark.parametrize("kind", ["folder", "zip", "brick", "array"])
def test_hdf5_round_trip(tmp_path, kind, embed):
    images = _images(4, seed=3)
    ids = ["a", "b", "c", "d"]
    if kind == "folder":
        _write_pngs(tmp_path / "f", images)
        s = StimulusSet.from_folder(tmp_path / "f", ids=ids, members=[f"img{k}.png" for k in range(4)])
    elif kind == "zip":
        _write_pngs(tmp_path / "f", images)
        with zipfile.ZipFile(tmp_path / "s.zip", "w") as zf:
            for k in range(4):
                zf.write(tmp_path / "f" / f"img{k}.png", f"sub/img{k}.png")
        s = StimulusSet.from_zip(tmp_path / "s.zip", ids=ids, members=[f"sub/img{k}.png" for k in range(4)])
    elif kind == "brick":
        with h5py.File(tmp_path / "b.h5", "w") as f:
            f["imgBrick"] = images
        s = StimulusSet.from_brick(tmp_path / "b.h5", ids=ids)
    else:
        s = StimulusSet.from_array(images, ids)
    with h5py.File(tmp_path / "out.h5", "w") as f:
        s.to_hdf5(f.create_group("stimuli"), embed=embed)
    with h5py.File(tmp_path / "out.h5", "r") as f:
        back = StimulusSet.from_hdf5(f["stimuli"])
    assert back.ids == ids
    for k, i in enumerate(ids):
        np.testing.assert_array_equal(back.load(i), images[k])


def test_embedded_variable_size_arrays(tmp_path):
    images = [_images(1, (4, 4))[0], _images(1, (3, 7))[0]]
    s = StimulusSet.from_array(images, ["x", "y"])
    with h5py.File(tmp_path / "o.h5", "w") as f:
        s.to_hdf5(f.create_group("stimuli"))
    with h5py.File(tmp_path / "o.h5", "r") as f:
        back = StimulusSet.from_hdf5(f["stimuli"])
    np.testing.assert_array_equal(back.load("y"), images[1])


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        StimulusSet.from_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="missing.zip"):
        StimulusSet.from_zip(tmp_path / "missing.zip")
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as zf:
        zf.writestr("image0001.jpg", b"not a jpeg")
    with pytest.raises(StimulusError, match="image0002.jpg"):
        StimulusSet.from_zip(tmp_path / "s.zip", ids=["a"], members=["image0002.jpg"])
    s = StimulusSet.from_zip(tmp_path / "s.zip")
    with pytest.raises(StimulusError, match="cannot decode"):
        s.load("image0001")
    with pytest.raises(KeyError, match="zzz"):
        s.load("zzz")
    with pytest.raises(StimulusError, match="duplicate"):
        StimulusSet.from_array(_images(2), ["a", "a"])
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["imgBrick"] = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(StimulusError, match="expected \\(N, H, W, 3\\) uint8"):
        StimulusSet.from_brick(tmp_path / "b.h5")
    folder = tmp_path / "f"
    _write_pngs(folder, _images(2))
    s = StimulusSet.from_folder(folder)
    (folder / "img1.png").unlink()
    with pytest.raises(FileNotFoundError, match="img1.png"):
        s.load("img1")
