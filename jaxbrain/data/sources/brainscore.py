"""FreemanZiemba2013 and MajajHong2015 from Brain-Score's public netCDF assemblies and stimulus sets.

Releases (Brain-Score / BrainIO, bucket "brainio-brainscore"; registered in brain-score/vision
brainscore_vision/data/{freemanziemba2013,majajhong2015}/__init__.py):
  * FreemanZiemba2013: Freeman, Ziemba, Heeger, Simoncelli & Movshon (2013), "A functional and perceptual
    signature of the second visual area in primates", Nature Neuroscience 16:974-981,
    https://doi.org/10.1038/nn.3402 . Assembly "movshon.FreemanZiemba2013.public"
    (assy_movshon_FreemanZiemba2013_public.nc), stimulus set "movshon.FreemanZiemba2013-public"
    (image_movshon_FreemanZiemba2013-public.csv / .zip, its metadata), images from the aperture stimulus set
    "movshon.FreemanZiemba2013.aperture-public" (image_movshon_FreemanZiemba2013_aperture-public.csv / .zip), the
    stimuli as the animals saw them inside the aperture, which the paper's reference extracts features from.
    Macaque V1 and V2 single units pooled over animals (one subject, "pooled"), 1 ms time bins.
  * MajajHong2015: Majaj, Hong, Solomon & DiCarlo (2015), "Simple learned weighted sums of inferior temporal
    neuronal firing rates accurately predict human core object recognition performance", J. Neurosci.
    35:13402-13418, https://doi.org/10.1523/JNEUROSCI.5181-14.2015 . Assembly "dicarlo.MajajHong2015.public"
    (assy_dicarlo_MajajHong2015_public.nc), stimulus set "dicarlo.hvm-public" (image_dicarlo_hvm-public.csv /
    .zip). Multi-unit sites in V4 and IT of two monkeys (subjects = the `animal` coordinate), one 70-170 ms bin.

Files expected under `source_dir` (names overridable):
  the assembly .nc: a NeuroidAssembly DataArray (presentation x neuroid [x time_bin]) written by BrainIO with its
      MultiIndex levels stored as plain coordinates: presentation: stimulus_id (older files: image_id) and
      repetition; neuroid: neuroid_id, region, animal (MajajHong); time_bin: time_bin_start, time_bin_end (ms).
  the stimulus set .csv: one row per image with stimulus_id (or image_id), the image's file name (filename or
      image_file_name) and metadata: texture_family / texture_type (FreemanZiemba), object_name / category_name
      (MajajHong).
  the stimulus set .zip: the images, found by file name (or by base name inside a sub-folder).
  `image_files` (csv, zip) take the images from another stimulus set with the same stimulus ids (FreemanZiemba2013's
      aperture set); the stimulus set above still gives the metadata.

Preparation: responses are averaged over the response window as Brain-Score's benchmarks use it: 50-200 ms for
FreemanZiemba2013 (the mean of the 1 ms bins 50..199, brainscore_vision/benchmarks/freemanziemba2013/benchmarks/
benchmark.py, load_assembly: time_window = (50, 200)) and the released 70-170 ms bin for MajajHong2015 (the
benchmark squeezes the single time bin, brainscore_vision/benchmarks/majajhong2015/benchmark.py). Trials per
(subject, region) become (neuroids, stimuli, repetition slots) with NaN for missing repeats, one slot per
`repetition` value (as xarray's unstack of the reference); the noise ceiling is computed from them over all stimuli
(`jaxbrain.metrics.noise_ceiling`) with n = the number of repetition slots as the reference does
(`ceiling_repeats="mean_inverse"` uses the repeats each stimulus has); neuroids with NC below `min_nc` (10 %) are
dropped here (DESIGN.md section 3, reliability filter). Test split: 10 % of the id-sorted stimuli, stratified by
texture type (FreemanZiemba) / object category (MajajHong), seed 42, and both splits keep the shuffled order that
scikit-learn's train_test_split returns, as the reference does (`jaxbrain.data.neural.stratified_order`): the
contiguous outer-CV folds on the train split follow that order.
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from collections.abc import Sequence

import numpy as np
import pandas as pd

FZ_FILES = ("assy_movshon_FreemanZiemba2013_public.nc", "image_movshon_FreemanZiemba2013-public.csv",
            "image_movshon_FreemanZiemba2013-public.zip")
FZ_APERTURE_FILES = ("image_movshon_FreemanZiemba2013_aperture-public.csv",
                     "image_movshon_FreemanZiemba2013_aperture-public.zip")
MH_FILES = ("assy_dicarlo_MajajHong2015_public.nc", "image_dicarlo_hvm-public.csv", "image_dicarlo_hvm-public.zip")
FZ_WINDOW = (50, 200)
MH_WINDOW = (70, 170)
ID_COORDS = ("stimulus_id", "image_id")
FILE_COLUMNS = ("filename", "image_file_name")


class AssemblyError(ValueError):
    """A Brain-Score assembly or stimulus set that cannot be used (names the file and the fault)."""


# ---- pure helpers ---------------------------------------------------------------------------------------------

def window_mean(assembly, window: tuple[float, float], source: str):
    """Mean over the time bins inside [window[0], window[1]] ms; drops the time_bin dimension."""
    if "time_bin" not in assembly.dims:
        return assembly
    for c in ("time_bin_start", "time_bin_end"):
        if c not in assembly.coords:
            raise AssemblyError(f"{source}: time_bin dimension without coordinate {c!r}")
    start = np.asarray(assembly["time_bin_start"].values, dtype=float)
    end = np.asarray(assembly["time_bin_end"].values, dtype=float)
    inside = np.flatnonzero((start >= window[0]) & (end <= window[1]))
    if inside.size == 0:
        bins = list(zip(start.tolist(), end.tolist()))
        raise AssemblyError(f"{source}: no time bin inside the response window {window} ms; bins: {bins[:6]}")
    covered = np.zeros(int(window[1] - window[0]), bool)
    for s, e in zip(start[inside], end[inside]):
        covered[int(s - window[0]):int(e - window[0])] = True
    if not covered.all():
        raise AssemblyError(f"{source}: time bins cover only {covered.sum()} of the {covered.size} ms of the "
                            f"response window {window}")
    return assembly.isel(time_bin=inside).mean("time_bin")


def trials_by_stimulus(values: np.ndarray, stimulus_ids: np.ndarray, repetition: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique ids, trials (units, stimuli, repeat slots) with NaN padding) from presentation rows.

    `values` is (presentations, units). With `repetition`, slot k holds the k-th smallest repetition value (as
    xarray's unstack does); without it, each stimulus's presentations fill slots 0, 1, ... in file order.
    """
    ids, inverse = np.unique(stimulus_ids, return_inverse=True)
    if repetition is None:
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse, minlength=ids.size)
        slot = np.empty(len(stimulus_ids), dtype=np.int64)
        slot[order] = np.arange(len(order)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[inverse[order]]
    else:
        _, slot = np.unique(np.asarray(repetition), return_inverse=True)
    flat = inverse * (slot.max() + 1) + slot
    if np.unique(flat).size != flat.size:
        dup = str(ids[np.flatnonzero(np.bincount(flat) > 1)[0] // (slot.max() + 1)])
        raise ValueError(f"stimulus {dup!r} has two presentations with the same repetition")
    trials = np.full((values.shape[1], ids.size, slot.max() + 1), np.nan, dtype=np.float64)
    trials[:, inverse, slot] = values.T
    return ids, trials


# ---- file reading ---------------------------------------------------------------------------------------------

def open_assembly(path: pathlib.Path):
    """The assembly DataArray (lazy) with the presentation and neuroid dimensions checked."""
    import xarray as xr

    if not path.is_file():
        raise FileNotFoundError(f"Brain-Score assembly not found: {path}")
    try:
        ds = xr.open_dataset(path, engine="h5netcdf")
    except Exception as exc:
        raise AssemblyError(f"{path}: cannot open as netCDF4/HDF5 ({type(exc).__name__}: {exc})") from exc
    arrays = [v for v in ds.data_vars if {"presentation", "neuroid"} <= set(ds[v].dims)]
    if len(arrays) != 1:
        raise AssemblyError(f"{path}: expected one data variable over (presentation, neuroid[, time_bin]), "
                            f"found {[(v, ds[v].dims) for v in ds.data_vars]}")
    da = ds[arrays[0]]
    extra = set(da.dims) - {"presentation", "neuroid", "time_bin"}
    if extra:
        raise AssemblyError(f"{path}: unexpected dimension(s) {sorted(extra)} in {da.dims}")
    return da


def coord(assembly, names: Sequence[str], dim: str, source: str) -> np.ndarray:
    for n in names:
        if n in assembly.coords:
            c = assembly[n]
            if c.dims != (dim,):
                raise AssemblyError(f"{source}: coordinate {n!r} is over {c.dims}, expected ({dim!r},)")
            return np.asarray(c.values)
    raise AssemblyError(f"{source}: no coordinate {' or '.join(map(repr, names))} on {dim!r}")


def read_stimulus_csv(path: pathlib.Path, needed: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"Brain-Score stimulus set CSV not found: {path}")
    table = pd.read_csv(path)
    id_col = next((c for c in ID_COORDS if c in table.columns), None)
    file_col = next((c for c in FILE_COLUMNS if c in table.columns), None)
    if id_col is None or file_col is None:
        raise AssemblyError(f"{path}: needs columns stimulus_id (or image_id) and filename (or image_file_name); "
                            f"has {list(table.columns)}")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise AssemblyError(f"{path}: missing column(s) {missing}; has {list(table.columns)}")
    table = table.rename(columns={id_col: "stimulus_id", file_col: "filename"})
    table["stimulus_id"] = table["stimulus_id"].astype(str)
    dups = table["stimulus_id"][table["stimulus_id"].duplicated()].tolist()
    if dups:
        raise AssemblyError(f"{path}: duplicate stimulus ids {dups[:3]}")
    return table.set_index("stimulus_id")


def zip_members(path: pathlib.Path, filenames: Sequence[str]) -> list[str]:
    """The member of `path` holding each file name (exact, or the unique member with that base name)."""
    if not path.is_file():
        raise FileNotFoundError(f"Brain-Score stimulus zip not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile as exc:
        raise AssemblyError(f"{path}: not a zip archive ({exc})") from exc
    exact = set(names)
    by_base: dict[str, list[str]] = {}
    for n in names:
        by_base.setdefault(n.rsplit("/", 1)[-1], []).append(n)
    out = []
    for f in filenames:
        f = str(f)
        if f in exact:
            out.append(f)
            continue
        hits = by_base.get(f.replace("\\", "/").rsplit("/", 1)[-1], [])
        if len(hits) != 1:
            raise AssemblyError(f"{path}: image {f!r} {'not found' if not hits else 'is ambiguous'} in the zip")
        out.append(hits[0])
    return out


def _stimulus_images(source_dir: pathlib.Path, image_files: tuple[str, str], stim_ids):
    """The StimulusSet of `stim_ids` from a stimulus set's CSV (file names) and zip (images)."""
    from jaxbrain.data.stimulus_set import StimulusSet

    csv_path, zip_path = (source_dir / f for f in image_files)
    table = read_stimulus_csv(csv_path, [])
    absent = [i for i in stim_ids if i not in table.index]
    if absent:
        raise AssemblyError(f"{csv_path}: {len(absent)} stimulus ids of the assembly have no image, "
                            f"e.g. {absent[:3]}")
    members = zip_members(zip_path, table.loc[list(stim_ids), "filename"].astype(str).tolist())
    return StimulusSet.from_zip(zip_path, ids=list(stim_ids), members=members)


# ---- the benchmark --------------------------------------------------------------------------------------------

def _region_responses(trials, subject_of, region, subjects, regions, split_pos, min_nc, ceiling_repeats, src):
    """Repeat-averaged responses per (split, subject, region) of the neuroids whose ceiling reaches min_nc."""
    from jaxbrain import metrics

    missing_regions = [r for r in regions if r not in set(region.tolist())]
    if missing_regions:
        raise AssemblyError(f"{src}: region(s) {missing_regions} absent; has {sorted(set(region.tolist()))}")
    responses, ceilings = {}, {}
    for s in subjects:
        for r in regions:
            units = np.flatnonzero((subject_of == s) & (region == r))
            if units.size == 0:
                raise AssemblyError(f"{src}: subject {s!r} has no neuroid in region {r!r}")
            nc = np.asarray(metrics.noise_ceiling(trials[units], unequal_repeats=ceiling_repeats), np.float64)
            keep = np.ones(units.size, bool) if min_nc is None else nc >= min_nc
            if not keep.any():
                raise AssemblyError(f"{src}: subject {s!r} region {r!r}: no neuroid reaches NC >= {min_nc} % "
                                    f"(max {np.nanmax(nc):.1f} %)")
            mean = np.nanmean(trials[units[keep]], axis=2).T          # (stimuli, neuroids)
            ceilings[(s, r)] = nc[keep].astype(np.float32)
            for split, pos in split_pos.items():
                responses[(split, s, r)] = mean[pos].astype(np.float32)
    return responses, ceilings


def read_assembly_benchmark(name: str, source_dir: str | os.PathLike, files: tuple[str, str, str], *,
                            window: tuple[float, float], stratify_by: str, subject_coord: str | None,
                            regions: Sequence[str], test_fraction: float = 0.1, seed: int = 42,
                            min_nc: float | None = 10.0, image_files: tuple[str, str] | None = None,
                            ceiling_repeats: str = "slots"):
    """A NeuralDataset (modality "ephys") from one assembly, its stimulus CSV and image zip (or `image_files`)."""
    from jaxbrain.data.neural import NeuralDataset, stratified_order

    source_dir = pathlib.Path(source_dir)
    nc_path, csv_path = source_dir / files[0], source_dir / files[1]
    src = str(nc_path)
    assembly = open_assembly(nc_path)
    presentation_ids = coord(assembly, ID_COORDS, "presentation", src).astype(str)
    repetition = coord(assembly, ("repetition",), "presentation", src) if "repetition" in assembly.coords else None
    region = coord(assembly, ("region",), "neuroid", src).astype(str)
    subject_of = (np.full(region.shape, "pooled") if subject_coord is None
                  else coord(assembly, (subject_coord,), "neuroid", src).astype(str))
    values = np.asarray(window_mean(assembly, window, src).transpose("presentation", "neuroid").values,
                        dtype=np.float64)
    if not np.isfinite(values).all():
        raise AssemblyError(f"{src}: {int((~np.isfinite(values)).sum())} NaN/inf responses in the window {window}")
    try:
        stim_ids, trials = trials_by_stimulus(values, presentation_ids, repetition)
    except ValueError as exc:
        raise AssemblyError(f"{src}: {exc}") from None
    reps = (~np.isnan(trials[0])).sum(axis=1)
    if reps.min() < 2:
        raise AssemblyError(f"{src}: stimulus {stim_ids[int(np.argmin(reps))]!r} has {reps.min()} repetition(s); "
                            "the noise ceiling needs at least 2")

    table = read_stimulus_csv(csv_path, [stratify_by])
    absent = [i for i in stim_ids if i not in table.index]
    if absent:
        raise AssemblyError(f"{csv_path}: {len(absent)} stimulus ids of {nc_path.name} are not in the stimulus "
                            f"set, e.g. {absent[:3]}")
    rows = table.loc[list(stim_ids)]
    try:
        train_pos, test_pos = stratified_order(rows[stratify_by].astype(str).to_numpy(), test_fraction, seed)
    except ValueError as exc:       # e.g. fewer test stimuli than strata
        raise AssemblyError(f"{csv_path}: cannot split {len(stim_ids)} stimuli {test_fraction:g} test stratified "
                            f"by {stratify_by!r}: {exc} (choose a coarser stratify_by column)") from exc
    stimuli = _stimulus_images(source_dir, image_files or (files[1], files[2]), stim_ids)
    split_pos = {"train": train_pos, "test": test_pos}
    subjects = sorted(set(subject_of.tolist()))
    responses, ceilings = _region_responses(trials, subject_of, region, subjects, regions, split_pos, min_nc,
                                            ceiling_repeats, src)
    ds = NeuralDataset(name=name, modality="ephys", subjects=subjects, rois=list(regions),
                       splits=["train", "test"],
                       stimulus_ids={"train": stim_ids[train_pos], "test": stim_ids[test_pos]},
                       responses=responses, noise_ceilings=ceilings, stimuli=stimuli)
    ds.validate(source=src)
    return ds


def load_freemanziemba2013(source_dir: str | os.PathLike, *, files: tuple[str, str, str] = FZ_FILES,
                           image_files: tuple[str, str] = FZ_APERTURE_FILES,
                           window: tuple[float, float] = FZ_WINDOW, stratify_by: str = "texture_type",
                           test_fraction: float = 0.1, seed: int = 42, min_nc: float | None = 10.0,
                           ceiling_repeats: str = "slots"):
    """FreemanZiemba2013 (V1, V2; one pooled subject; aperture images) as a NeuralDataset; see the module
    docstring."""
    return read_assembly_benchmark("freemanziemba2013", source_dir, tuple(files), window=tuple(window),
                                   stratify_by=stratify_by, subject_coord=None, regions=("V1", "V2"),
                                   test_fraction=test_fraction, seed=seed, min_nc=min_nc,
                                   image_files=tuple(image_files), ceiling_repeats=ceiling_repeats)


def load_majajhong2015(source_dir: str | os.PathLike, *, files: tuple[str, str, str] = MH_FILES,
                       window: tuple[float, float] = MH_WINDOW, stratify_by: str = "category_name",
                       test_fraction: float = 0.1, seed: int = 42, min_nc: float | None = 10.0,
                       ceiling_repeats: str = "slots"):
    """MajajHong2015 (V4, IT; subjects = animals) as a NeuralDataset; see the module docstring."""
    return read_assembly_benchmark("majajhong2015", source_dir, tuple(files), window=tuple(window),
                                   stratify_by=stratify_by, subject_coord="animal", regions=("V4", "IT"),
                                   test_fraction=test_fraction, seed=seed, min_nc=min_nc,
                                   ceiling_repeats=ceiling_repeats)
