import numpy as np
import pytest

from jaxbrain.data import stimuli as stimulus_pipeline
from jaxbrain.data.stimulus_cache import cached_stimuli
from jaxbrain.models.registry import Preprocessing
from stimulus_fakes import FakeStimuli

BICUBIC = Preprocessing(resize=20, crop=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation="bicubic")
BILINEAR = Preprocessing(resize=18, crop=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _stimuli(n=11, **kw):
    rng = np.random.default_rng(0)
    shapes = [(24, 31, 3), (30, 22, 3), (19, 19, 3)]
    return FakeStimuli({f"s{k:02d}": rng.integers(0, 256, shapes[k % 3], dtype=np.uint8) for k in range(n)}, **kw)


def _batches(stimuli, ids, preprocessing):
    return [b["image"] for b in stimulus_pipeline.iterate_batches(stimuli, ids, preprocessing, 4, num_threads=2)]


@pytest.mark.parametrize("preprocessing", [BICUBIC, BILINEAR])
def test_cached_batches_equal_decoded_ones_bit_for_bit(tmp_path, preprocessing):
    stim = _stimuli()
    ids = stim.ids[::-1]
    expected = _batches(stim, ids, preprocessing)
    cached = cached_stimuli(stim, ids, preprocessing, tmp_path, "set-a", num_threads=2)
    assert stim.loads == 2 * len(ids) and isinstance(cached.array, np.memmap)
    for got, want in zip(_batches(cached, ids, preprocessing), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert stim.loads == 2 * len(ids)  # the batches read the cache only


def test_cache_is_built_once_per_set_order_and_geometry(tmp_path):
    stim = _stimuli()
    first = cached_stimuli(stim, stim.ids, BICUBIC, tmp_path, "set-a")
    again = cached_stimuli(stim, stim.ids, BICUBIC, tmp_path, "set-a")
    assert again.path == first.path and stim.loads == len(stim)
    others = [cached_stimuli(stim, stim.ids, BILINEAR, tmp_path, "set-a"),
              cached_stimuli(stim, stim.ids[::-1], BICUBIC, tmp_path, "set-a"),
              cached_stimuli(stim, stim.ids, BICUBIC, tmp_path, "set-b")]
    assert len({first.path, *(c.path for c in others)}) == 4 and stim.loads == 4 * len(stim)


def test_interrupted_build_leaves_nothing_and_a_rerun_completes(tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        cached_stimuli(_stimuli(fail_after=5), _stimuli().ids, BICUBIC, tmp_path, "set-a", num_threads=1)
    assert list(tmp_path.iterdir()) == []
    stim = _stimuli()
    cached = cached_stimuli(stim, stim.ids, BICUBIC, tmp_path, "set-a")
    assert [p.name for p in tmp_path.iterdir()] == [cached.path.name]


def test_a_cache_of_another_geometry_is_refused(tmp_path):
    stim = _stimuli()
    cached = cached_stimuli(stim, stim.ids, BICUBIC, tmp_path, "set-a")
    with pytest.raises(ValueError, match=r"resized and cropped as \(20, 16, 'bicubic'\).*\(18, 16, 'bilinear'\)"):
        _batches(cached, stim.ids, BILINEAR)
