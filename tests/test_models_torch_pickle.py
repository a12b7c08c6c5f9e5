"""The torch-free checkpoint reader, on files assembled opcode by opcode as torch.save lays them out."""

import pickle
import struct
import zipfile

import numpy as np
import pytest

from jaxbrain.models import torch_pickle


def _body(obj) -> bytes:
    """Pickle opcodes of a primitive object without the protocol header and STOP."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tuple(*parts: bytes) -> bytes:
    return b"(" + b"".join(parts) + b"t"


def _tensor(key: str, numel: int, offset: int, size, stride, storage_type="FloatStorage") -> bytes:
    pid = _tuple(_body("storage"), _global("torch", storage_type), _body(key), _body("cpu"), _body(numel),
                 _body(None))
    args = _tuple(pid + b"Q", _body(offset), _body(tuple(size)), _body(tuple(stride)), _body(False),
                  _global("collections", "OrderedDict") + b")R")
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _main_pickle(entries: dict[str, bytes]) -> bytes:
    out = b"\x80\x02" + _global("collections", "OrderedDict") + b")R"
    for name, tensor in entries.items():
        out += _body(name) + tensor + b"s"
    return out + b"."


def _legacy_file(entries: dict[str, bytes], storages: dict[str, np.ndarray]) -> bytes:
    header = pickle.dumps(torch_pickle.LEGACY_MAGIC, 2) + pickle.dumps(1001, 2)
    header += pickle.dumps({"protocol_version": 1001, "little_endian": True}, 2)
    data = b"".join(struct.pack("<q", a.size) + a.astype(a.dtype.newbyteorder("<")).tobytes()
                    for a in storages.values())
    return header + _main_pickle(entries) + pickle.dumps(list(storages), 2) + data


STORAGE = np.arange(10, dtype=np.float32) * 1.5
ENTRIES = {
    "weight": _tensor("0", 10, 0, (2, 3), (3, 1)),
    "weight_t": _tensor("0", 10, 0, (3, 2), (1, 3)),  # a transposed view of the same storage
    "bias": _tensor("0", 10, 6, (4,), (1,)),  # an offset view
    "steps": _tensor("1", 1, 0, (), (), "LongStorage"),
}


def _expected():
    return {
        "weight": STORAGE[:6].reshape(2, 3),
        "weight_t": STORAGE[:6].reshape(2, 3).T,
        "bias": STORAGE[6:10],
        "steps": np.array(7, dtype=np.int64),
    }


def test_legacy_file_round_trip(tmp_path):
    path = tmp_path / "legacy.pth"
    path.write_bytes(_legacy_file(ENTRIES, {"0": STORAGE, "1": np.array([7], dtype=np.int64)}))
    state = torch_pickle.load(path)
    assert list(state) == list(ENTRIES)
    for name, expected in _expected().items():
        assert state[name].dtype == expected.dtype
        np.testing.assert_array_equal(state[name], expected)


def test_zip_file_round_trip(tmp_path):
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("new/data.pkl", _main_pickle(ENTRIES))
        zf.writestr("new/data/0", STORAGE.tobytes())
        zf.writestr("new/data/1", np.array([7], dtype=np.int64).tobytes())
        zf.writestr("new/version", "3\n")
    state = torch_pickle.load(path)
    for name, expected in _expected().items():
        np.testing.assert_array_equal(state[name], expected)


def test_refuses_arbitrary_globals(tmp_path):
    path = tmp_path / "evil.pth"
    header = pickle.dumps(torch_pickle.LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps({}, 2)
    evil = b"\x80\x02" + _global("os", "system") + _tuple(_body("echo pwned")) + b"R."
    path.write_bytes(header + evil)
    with pytest.raises(torch_pickle.CheckpointError, match=r"evil.pth.*refusing to load global os.system"):
        torch_pickle.load(path)


@pytest.mark.parametrize("cut", [5, 60, 20])
def test_truncated_file_is_a_clear_error(tmp_path, cut):
    data = _legacy_file(ENTRIES, {"0": STORAGE, "1": np.array([7], dtype=np.int64)})
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) - cut] if cut != 60 else data[:cut])
    with pytest.raises(torch_pickle.CheckpointError, match="cut.pth"):
        torch_pickle.load(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(pickle.dumps(12345, 2) + b"junk")
    with pytest.raises(torch_pickle.CheckpointError, match="random.pth.*magic"):
        torch_pickle.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        torch_pickle.load(tmp_path / "absent.pth")


def test_tensor_past_end_of_storage(tmp_path):
    entries = {"w": _tensor("0", 10, 8, (4,), (1,))}
    path = tmp_path / "overrun.pth"
    path.write_bytes(_legacy_file(entries, {"0": STORAGE}))
    with pytest.raises(torch_pickle.CheckpointError, match="past the end"):
        torch_pickle.load(path)


def test_scalar_offset_past_end_of_storage(tmp_path):
    entries = {"step": _tensor("0", 1, 5, (), (), "LongStorage")}
    path = tmp_path / "scalar.pth"
    path.write_bytes(_legacy_file(entries, {"0": np.array([7], dtype=np.int64)}))
    with pytest.raises(torch_pickle.CheckpointError, match="scalar.pth.*past the end"):
        torch_pickle.load(path)
