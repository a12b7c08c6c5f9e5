import json
import os
import stat

import numpy as np
import pytest

from jaxbrain.features import store


@pytest.fixture
def umask():
    """Sets a umask for the test and restores the previous one."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_files_get_the_mode_open_would_give(tmp_path, umask, mask):
    umask(mask)
    store.write_json(tmp_path / "a.json", {"x": 1})
    store.save_npy(tmp_path / "b.npy", np.arange(3))
    with store.atomic_path(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"abc")
    with open(tmp_path / "reference", "w"):
        pass
    for name in ("a.json", "b.npy", "c.bin"):
        assert _mode(tmp_path / name) == _mode(tmp_path / "reference") == 0o666 & ~mask, name


def test_atomic_write_replaces_whole_files_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "record.json"
    store.write_json(target, {"v": 1})
    assert json.loads(target.read_text()) == {"v": 1}

    def half_then_fail(handle):
        handle.write('{"v": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.atomic_write(target, half_then_fail, text=True)
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]
    store.save_npy(tmp_path / "x.npy", np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.eye(3, dtype=np.float32))


def test_rows_are_written_positionally_and_checked_on_reopen(tmp_path):
    path = tmp_path / "rows.npy"
    rows = store.Rows((5, 2, 3), np.float16, path, fresh=True)
    block = np.arange(12, dtype=np.float16).reshape(2, 2, 3)
    rows.write(3, block)
    rows.flush()
    rows.close()
    np.testing.assert_array_equal(np.load(path)[3:], block)
    np.testing.assert_array_equal(np.load(path)[:3], 0)
    again = store.Rows((5, 2, 3), np.float16, path, fresh=False)
    np.testing.assert_array_equal(again.read(3, 5), block)
    again.close()
    with pytest.raises(ValueError, match="rows.npy: holds float16 \\(5, 2, 3\\), expected float32"):
        store.Rows((5, 2, 3), np.float32, path, fresh=False)
    with pytest.raises(FileNotFoundError, match="other.npy: missing"):
        store.Rows((5,), np.float32, tmp_path / "other.npy", fresh=False)


def test_progress_refuses_other_ids_or_models(tmp_path):
    record = store.Progress(tmp_path, ["a", "b"], "net", {"dtype": "float32"})
    record.save()
    with pytest.raises(ValueError, match="another list of stimulus ids"):
        store.Progress(tmp_path, ["a", "c"], "net", {"dtype": "float32"})
    with pytest.raises(ValueError, match="model 'net', not 'other'"):
        store.Progress(tmp_path, ["a", "b"], "other", {"dtype": "float32"})
