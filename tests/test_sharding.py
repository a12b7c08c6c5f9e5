import jax
import numpy as np
import pytest
from jax.sharding import AxisType

from jaxbrain import sharding


def test_data_mesh_spans_all_devices_with_an_explicit_data_axis():
    mesh = sharding.data_mesh()
    assert jax.device_count() == 8  # conftest's fake CPU devices
    assert dict(mesh.shape) == {"data": 8}
    assert mesh.axis_types == (AxisType.Explicit,)
    assert sharding.data_size(sharding.data_mesh(jax.devices()[:1])) == 1


def test_data_size_rejects_a_mesh_without_the_axis():
    mesh = jax.make_mesh((8,), ("batch",), axis_types=(AxisType.Explicit,))
    with pytest.raises(ValueError, match="no axis 'data'"):
        sharding.data_size(mesh)


@pytest.mark.parametrize("n, multiple, expected", [(0, 8, 0), (1, 8, 8), (8, 8, 8), (9, 8, 16), (5, 1, 5)])
def test_padded_size(n, multiple, expected):
    assert sharding.padded_size(n, multiple) == expected


def test_pad_to_multiple_appends_zero_rows_and_masks_them():
    x = np.arange(10, dtype=np.float32).reshape(5, 2) + 1
    padded, mask = sharding.pad_to_multiple(x, 4)
    assert padded.shape == (8, 2)
    np.testing.assert_array_equal(padded[:5], x)
    np.testing.assert_array_equal(padded[5:], 0)
    np.testing.assert_array_equal(mask, [True] * 5 + [False] * 3)
    same, mask = sharding.pad_to_multiple(x[:4], 4)
    assert same.shape == (4, 2) and mask.all()


def test_process_rows_cover_the_whole_batch_on_one_process():
    mesh = sharding.data_mesh()
    assert sharding.process_rows(mesh, 16) == (0, 16)
    with pytest.raises(ValueError, match="not a multiple of the 8 devices"):
        sharding.process_rows(mesh, 12)


def test_global_batch_places_consecutive_rows_on_consecutive_devices():
    mesh = sharding.data_mesh()
    local = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    x = sharding.global_batch(local, mesh)
    assert x.shape == (16, 3)
    assert len(x.addressable_shards) == 8
    for shard in x.addressable_shards:
        rows = shard.index[0]
        np.testing.assert_array_equal(np.asarray(shard.data), local[rows])
        assert rows.stop - rows.start == 2
    np.testing.assert_array_equal(sharding.to_host(x), local)
