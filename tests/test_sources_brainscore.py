"""FreemanZiemba2013 / MajajHong2015 readers on tiny Brain-Score style files.

Fixtures: a NeuroidAssembly written the way BrainIO stores one (a DataArray over presentation x neuroid x time_bin
whose MultiIndex levels are plain coordinates, saved with to_netcdf on the h5netcdf engine), the stimulus set CSV
and the image zip. Expected values are computed here with numpy from the planted arrays.
"""

import io
import pathlib
import zipfile

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

from jaxbrain.data.sources import brainscore


def nsd_ceiling(trials):
    """float64 NSD noise ceiling of trials (units, stimuli, reps), n = reps (written independently)."""
    z = (trials - trials.mean(axis=1, keepdims=True)) / trials.std(axis=1, keepdims=True)
    noise_var = z.var(axis=2, ddof=1).mean(axis=1)
    snr = np.maximum(1 - noise_var, 0) / noise_var
    return 100 * snr / (snr + 1 / trials.shape[2])


def write_stimulus_set(folder: pathlib.Path, csv_name, zip_name, ids, meta: dict, subfolder="", value=0):
    """Image k of the set is a constant 4x4 RGB image of value + k."""
    rows = {"stimulus_id": ids, "filename": [f"{i}.png" for i in ids], **meta}
    pd.DataFrame(rows).to_csv(folder / csv_name, index=False)
    with zipfile.ZipFile(folder / zip_name, "w") as zf:
        for k, i in enumerate(ids):
            buf = io.BytesIO()
            Image.fromarray(np.full((4, 4, 3), value + k, np.uint8)).save(buf, format="PNG")
            zf.writestr(f"{subfolder}{i}.png", buf.getvalue())


def make_assembly(folder: pathlib.Path, name: str, rng, *, n_stim, reps, regions, animals, bins, signal=1.0,
                  id_coord="stimulus_id", drop_coord=None, missing=()):
    """Planted: response[unit, stim, rep, bin] = signal * a[unit, stim] + noise, minus the (stim, rep) presentations
    in `missing` (then NaN in the returned values); returns ids, values (units, stim, rep, bin)."""
    ids = [f"img{k:03d}" for k in range(n_stim)]
    n_units = len(regions)
    a = rng.standard_normal((n_units, n_stim))
    signal = np.broadcast_to(np.asarray(signal, dtype=float), (n_units,))
    values = signal[:, None, None, None] * a[:, :, None, None] + rng.standard_normal((n_units, n_stim, reps,
                                                                                      len(bins)))
    order = rng.permutation(n_stim * reps)                         # presentations in shuffled order
    stim_of = np.repeat(np.arange(n_stim), reps)[order]
    rep_of = np.tile(np.arange(reps), n_stim)[order]
    shown = np.asarray([(st, r) not in set(missing) for st, r in zip(stim_of, rep_of)])
    stim_of, rep_of = stim_of[shown], rep_of[shown]
    for st, r in missing:
        values[:, st, r] = np.nan
    data = values[:, stim_of, rep_of, :].transpose(1, 0, 2)       # (presentation, neuroid, time_bin)
    coords = {
        id_coord: ("presentation", np.asarray(ids)[stim_of]),
        "repetition": ("presentation", rep_of),
        "neuroid_id": ("neuroid", [f"n{u}" for u in range(n_units)]),
        "region": ("neuroid", list(regions)),
        "animal": ("neuroid", list(animals)),
        "time_bin_start": ("time_bin", [b[0] for b in bins]),
        "time_bin_end": ("time_bin", [b[1] for b in bins]),
    }
    if drop_coord:
        coords.pop(drop_coord)
    da = xr.DataArray(data, dims=("presentation", "neuroid", "time_bin"), coords=coords)
    da.to_netcdf(folder / name, engine="h5netcdf")
    return ids, values


def make_majajhong(folder, rng, **kw):
    regions = ["V4"] * 3 + ["IT"] * 3 + ["V4"] * 3 + ["IT"] * 3
    animals = ["Chabo"] * 6 + ["Tito"] * 6
    ids, values = make_assembly(folder, brainscore.MH_FILES[0], rng, n_stim=40, reps=4, regions=regions,
                                animals=animals, bins=[(70, 170)], **kw)
    categories = np.asarray(["Animals", "Boats", "Cars", "Chairs"])[np.arange(40) % 4]
    write_stimulus_set(folder, brainscore.MH_FILES[1], brainscore.MH_FILES[2], ids,
                       {"category_name": categories, "object_name": [f"o{k % 8}" for k in range(40)]})
    return ids, values, np.asarray(regions), np.asarray(animals), categories


def reference_ceiling_with_slots(trials):
    """float64 transcription of the reference's variance-based ceiling on trials (units, stimuli, repetition slots)
    with NaN for missing repeats: z-score each (unit, slot) over the stimuli that have it (population SD), noise
    variance = mean over stimuli of the ddof=1 variance over the repeats present, n = the number of slots."""
    units, stimuli, slots = trials.shape
    out = np.empty(units)
    for u in range(units):
        z = np.full((stimuli, slots), np.nan)
        for k in range(slots):
            col = trials[u, :, k]
            ok = ~np.isnan(col)
            z[ok, k] = (col[ok] - col[ok].mean()) / col[ok].std()
        noise = np.mean([np.var(row[~np.isnan(row)], ddof=1) for row in z])
        snr = max(1 - noise, 0) / noise
        out[u] = 100 * snr / (snr + 1 / slots)
    return out


def reference_split(labels):
    """The reference's split: sklearn's train_test_split of the id-sorted stimulus positions, in its order."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), stratify=labels, test_size=0.1, random_state=42, shuffle=True)


def test_majajhong_responses_ceilings_and_stratified_split(tmp_path):
    ids, values, regions, animals, categories = make_majajhong(tmp_path, np.random.default_rng(0))
    ds = brainscore.load_majajhong2015(tmp_path, min_nc=None)
    assert ds.modality == "ephys" and ds.subjects == ["Chabo", "Tito"] and ds.rois == ["V4", "IT"]
    train, test = ds.ids("train", "Chabo"), ds.ids("test", "Chabo")
    train_pos, test_pos = reference_split(categories)
    assert list(train) == [ids[k] for k in train_pos] and list(test) == [ids[k] for k in test_pos]
    assert list(train) != sorted(train)                                 # the shuffled order is kept
    assert len(test) == 4 and sorted(np.concatenate([train, test])) == ids
    cat_of = dict(zip(ids, categories))
    assert sorted(cat_of[i] for i in test) == ["Animals", "Boats", "Cars", "Chairs"]   # one per category
    trials = values[..., 0]                                             # the single 70-170 ms bin
    pos = {i: k for k, i in enumerate(ids)}
    for animal in ("Chabo", "Tito"):
        for region in ("V4", "IT"):
            units = np.flatnonzero((animals == animal) & (regions == region))
            np.testing.assert_allclose(ds.noise_ceilings[(animal, region)], nsd_ceiling(trials[units]), rtol=1e-5)
            for split, split_ids in (("train", train), ("test", test)):
                expected = trials[units].mean(axis=2).T[[pos[i] for i in split_ids]]
                np.testing.assert_allclose(ds.responses[(split, animal, region)], expected, rtol=1e-5)
    assert ds.stimuli.load(test[0]).shape == (4, 4, 3)
    again = brainscore.load_majajhong2015(tmp_path, min_nc=None)
    np.testing.assert_array_equal(again.ids("test", "Tito"), test)        # seed 42 is deterministic


def test_majajhong_reliability_filter_drops_unreliable_sites(tmp_path):
    signal = [3, 0, 3] + [3] * 9                                        # Chabo's second V4 site is pure noise
    ids, values, regions, animals, _ = make_majajhong(tmp_path, np.random.default_rng(3), signal=signal)
    trials = values[..., 0]
    units = np.flatnonzero((animals == "Chabo") & (regions == "V4"))
    nc = nsd_ceiling(trials[units])
    assert nc[1] < 10 <= min(nc[0], nc[2])                              # the fixture does what it claims
    ds = brainscore.load_majajhong2015(tmp_path)                       # default min_nc = 10 %
    np.testing.assert_allclose(ds.noise_ceilings[("Chabo", "V4")], nc[[0, 2]], rtol=1e-5)
    train = ds.ids("train", "Chabo")
    expected = trials[units[[0, 2]]].mean(axis=2).T[[ids.index(i) for i in train]]
    np.testing.assert_allclose(ds.responses[("train", "Chabo", "V4")], expected, rtol=1e-5)
    with pytest.raises(brainscore.AssemblyError, match="subject 'Chabo' region 'V4': no neuroid reaches NC >= 99"):
        brainscore.load_majajhong2015(tmp_path, min_nc=99.0)


def test_unequal_repeats_use_the_number_of_slots_or_the_mean_of_inverse_counts(tmp_path):
    missing = [(k, 3) for k in range(0, 40, 3)] + [(k, 2) for k in range(0, 40, 7)]
    ids, values, regions, animals, _ = make_majajhong(tmp_path, np.random.default_rng(4), signal=1.5,
                                                      missing=missing)
    trials = values[..., 0]
    units = np.flatnonzero((animals == "Tito") & (regions == "IT"))
    ds = brainscore.load_majajhong2015(tmp_path, min_nc=None)
    np.testing.assert_allclose(ds.noise_ceilings[("Tito", "IT")], reference_ceiling_with_slots(trials[units]),
                               rtol=1e-5)
    mean_inverse = brainscore.load_majajhong2015(tmp_path, min_nc=None, ceiling_repeats="mean_inverse")
    slots_nc = reference_ceiling_with_slots(trials[units])
    snr = slots_nc / (100 - slots_nc) / 4                               # NC = 100 snr / (snr + 1/4) inverted
    inv_n = np.mean(1 / (~np.isnan(trials[units[0]])).sum(axis=1))
    np.testing.assert_allclose(mean_inverse.noise_ceilings[("Tito", "IT")], 100 * snr / (snr + inv_n), rtol=1e-5)
    assert (mean_inverse.noise_ceilings[("Tito", "IT")] < ds.noise_ceilings[("Tito", "IT")]).all()
    np.testing.assert_allclose(ds.responses[("train", "Tito", "IT")],
                               np.nanmean(trials[units], axis=2).T[[ids.index(i) for i in ds.ids("train", "Tito")]],
                               rtol=1e-5)


def test_repetition_values_give_the_slots_like_xarrays_unstack():
    values = np.arange(5.0)[:, None]
    ids, trials = brainscore.trials_by_stimulus(values, np.array(["b", "a", "b", "a", "b"]), np.array([2, 0, 0, 2, 5]))
    assert ids.tolist() == ["a", "b"]
    np.testing.assert_array_equal(trials[0], [[1, 3, np.nan], [2, 0, 4]])    # slots = repetitions 0, 2, 5
    with pytest.raises(ValueError, match="stimulus 'a' has two presentations with the same repetition"):
        brainscore.trials_by_stimulus(values[:2], np.array(["a", "a"]), np.array([1, 1]))


def test_freemanziemba_window_mean_pooled_subject(tmp_path):
    rng = np.random.default_rng(2)
    bins = [(t, t + 1) for t in range(40, 210)]                        # 1 ms bins as released
    regions = ["V1"] * 4 + ["V2"] * 4
    ids, values = make_assembly(tmp_path, brainscore.FZ_FILES[0], rng, n_stim=60, reps=5, regions=regions,
                                animals=["a", "b"] * 4, bins=bins, signal=3.0, id_coord="image_id")
    families = np.asarray([f"{k % 5 + 13}" for k in range(60)])
    types = np.asarray(["texture", "noise"] * 30)
    write_stimulus_set(tmp_path, brainscore.FZ_FILES[1], brainscore.FZ_FILES[2], ids,
                       {"texture_family": families, "texture_type": types}, subfolder="images/")
    write_stimulus_set(tmp_path, *brainscore.FZ_APERTURE_FILES, ids, {}, value=100)   # the aperture images
    ds = brainscore.load_freemanziemba2013(tmp_path, min_nc=None)
    assert ds.subjects == ["pooled"] and ds.rois == ["V1", "V2"]
    inside = [k for k, (s, e) in enumerate(bins) if s >= 50 and e <= 200]
    assert len(inside) == 150
    trials = values[..., inside].mean(axis=-1)
    test = ds.ids("test", "pooled")
    train_pos, test_pos = reference_split(types)                        # stratified by texture_type
    assert list(ds.ids("train", "pooled")) == [ids[k] for k in train_pos] and list(test) == [ids[k] for k in test_pos]
    assert len(test) == 6 and sorted(types[ids.index(i)] for i in test) == ["noise"] * 3 + ["texture"] * 3
    assert ds.stimuli.load(ids[7])[0, 0, 0] == 107                      # from the aperture set, not the public one
    units = np.flatnonzero(np.asarray(regions) == "V2")
    np.testing.assert_allclose(ds.noise_ceilings[("pooled", "V2")], nsd_ceiling(trials[units]), rtol=1e-5)
    np.testing.assert_allclose(ds.responses[("test", "pooled", "V2")],
                               trials[units].mean(axis=2).T[[ids.index(i) for i in test]], rtol=1e-5)


def test_malformed_assemblies_raise_naming_file_and_fault(tmp_path):
    make_majajhong(tmp_path, np.random.default_rng(3), drop_coord="region")
    with pytest.raises(brainscore.AssemblyError, match=r"assy_dicarlo_MajajHong2015_public\.nc: no coordinate "
                                                       r"'region' on 'neuroid'"):
        brainscore.load_majajhong2015(tmp_path)
    make_majajhong(tmp_path, np.random.default_rng(3))
    with pytest.raises(brainscore.AssemblyError, match=r"MajajHong2015_public\.nc: no time bin inside the "
                                                       r"response window \(200, 300\)"):
        brainscore.load_majajhong2015(tmp_path, window=(200, 300))
    table = pd.read_csv(tmp_path / brainscore.MH_FILES[1])
    table.drop(columns=["category_name"]).to_csv(tmp_path / brainscore.MH_FILES[1], index=False)
    with pytest.raises(brainscore.AssemblyError, match=r"image_dicarlo_hvm-public\.csv: missing column\(s\) "
                                                       r"\['category_name'\]"):
        brainscore.load_majajhong2015(tmp_path)
    (tmp_path / brainscore.MH_FILES[0]).write_bytes(b"CDF\x01 not really")
    with pytest.raises(brainscore.AssemblyError, match="cannot open as netCDF4/HDF5"):
        brainscore.load_majajhong2015(tmp_path)
    with pytest.raises(FileNotFoundError, match="assy_movshon_FreemanZiemba2013_public.nc"):
        brainscore.load_freemanziemba2013(tmp_path)


def test_prepare_writes_majajhong_from_config_arguments(tmp_path):
    from configs import prepare as prepare_config
    from jaxbrain.data import neural
    from jaxbrain.experiments import prepare

    (tmp_path / "release").mkdir()
    make_majajhong(tmp_path / "release", np.random.default_rng(0))
    config = prepare_config.get_config(f"dataset=majajhong2015,source_dir={tmp_path / 'release'},min_nc=0")
    prepare.run(config, tmp_path / "work")
    ds = neural.load(tmp_path / "work" / "majajhong2015.h5")
    direct = brainscore.load_majajhong2015(tmp_path / "release", min_nc=0.0)
    for key, value in direct.responses.items():
        np.testing.assert_array_equal(ds.responses[key], value)
    np.testing.assert_array_equal(ds.ids("test", "Tito"), direct.ids("test", "Tito"))
