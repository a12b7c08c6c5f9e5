"""The results table: atomic parts, resume, no duplicate rows."""

import numpy as np
import pandas as pd
import pytest

from jaxbrain import results


def _rows(value):
    return [dict(model="m", benchmark="b", subject="s1", roi="V4", layer="l1", depth=0.5, stage="cv",
                 metric="r_nc", value=value, n_targets=3, alpha=10.0, seed=0)]


def test_parts_rebuild_results_without_duplicates(tmp_path):
    store = results.ResultStore(tmp_path)
    assert not store.has(("m", "b", "cv", "l1"))
    store.put(("m", "b", "cv", "l1"), _rows(0.5))
    store.put(("m", "b", "cv", "l2"), [dict(r, layer="l2") for r in _rows(0.7)])
    store.put(("m", "b", "cv", "l1"), _rows(0.6))  # a rerun of the same unit replaces its part
    table = results.read_table(tmp_path)
    assert len(table) == 2
    assert table.set_index("layer").value.to_dict() == {"l1": 0.6, "l2": 0.7}
    assert list(table.columns) == list(results.COLUMNS)
    assert store.has(("m", "b", "cv", "l1"))


def test_failed_write_leaves_no_file(tmp_path):
    class Boom(Exception):
        pass

    def explode(handle):
        handle.write("partial")
        raise Boom

    with pytest.raises(Boom):
        results._atomic_write(tmp_path / "x.csv", explode)
    assert list(tmp_path.iterdir()) == []


def test_json_handles_numpy(tmp_path):
    results.write_json(tmp_path / "s.json", {"a": np.float32(1.5), "b": np.arange(3)})
    assert (tmp_path / "s.json").read_text().count("1.5") == 1


def test_read_table_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.csv"):
        results.read_table(tmp_path)


def test_unknown_columns_rejected(tmp_path):
    store = results.ResultStore(tmp_path)
    rows = _rows(0.1)
    rows[0]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        store.put(("k",), rows)
    assert isinstance(store.table(), pd.DataFrame)
