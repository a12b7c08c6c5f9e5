"""Generic data: single trials from arrays or from a folder of .npy/.csv files, and RDM-only data for RSA.

Trials folder (`load_generic(folder)`), no particular release:
  stimuli.csv                 column `stimulus_id` (the order of the trials' stimulus axis); optional `split`
                              (train/test; otherwise a random `test_fraction` split with `seed`), optional
                              `label` (then the split is stratified by it), optional `image` (path of the image,
                              relative to the folder).
  trials_<subject>_<roi>.npy  float (units, stimuli, repeats) or (channels, times, stimuli, repeats); NaN marks a
                              missing repeat. Subject and ROI names may not contain "_" (the separator).
  trials.csv (instead of .npy) long format: subject, roi, unit, stimulus_id, repeat, value.
  images/                     optional: images named `<stimulus_id>.<ext>` when stimuli.csv has no `image` column.
Ceilings are the variance-based estimate of `jaxbrain.metrics.noise_ceiling` over all stimuli (each needs >= 2
repeats) or, with `ceiling_split`, over that split only.

RDM-only data (`RDMSet`): matrices over a common ordered stimulus list, for the RSA metrics and RDM benchmarks
(`jaxbrain.metrics.rdm_ceiling`, `rdm_scores`). A set declares its `kind` ("dissimilarity" or "similarity") and
whether its matrices are `symmetric`; per-subject split-half similarity matrices (row = one half of the data,
column = the other) need not be, and then are kept as they are. `groups` names the per-subject matrices of each
ROI, so `rdms.subject_matrices(roi)` is the (subjects, n, n) stack a benchmark scores.
`load_kriegeskorte92(folder)` reads the "92 images" data (Kriegeskorte et al. 2008, Neuron 60:1126,
https://doi.org/10.1016/j.neuron.2008.10.043) as shipped with rsatoolbox (`demos/92imageData`):
`Kriegeskorte_Neuron2008_supplementalData.mat` (stimuli_92objs with 175x175x3 images, RDMs_mIT_hIT_fig1 with the
monkey IT and human IT RDMs as condensed upper triangles) and optionally `92_brainRDMs.mat` (RDMs (1, 4, 2): human
IT of 4 subjects x 2 sessions, 92x92). `load_rdm_folder(folder)` reads `stimuli.csv` plus either dissimilarities
`rdm_<name>.npy` (square or condensed) or similarities `rsm_<name>.npy` (square); a name `<subject>_<roi>` puts the
matrix in group `<roi>`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from jaxbrain.data.neural import NeuralDataError, NeuralDataset, from_trials, random_split, stratified_split
from jaxbrain.data.stimulus_set import StimulusSet


class GenericFormatError(NeuralDataError):
    """A generic data folder is missing files or holds malformed ones."""


# ---------------------------------------------------------------------------------------------------------------
# trials

def from_arrays(trials: Mapping[tuple[str, str], np.ndarray], stimulus_ids: Sequence[str], *,
                name: str = "generic", modality: str = "ephys", split=None, labels=None,
                test_fraction: float = 0.1, seed: int = 42, images=None, ceiling_split: str | None = None,
                source: str = "<arrays>") -> NeuralDataset:
    """NeuralDataset from in-memory trials {(subject, roi): (*targets, stimuli, repeats)}.

    split: a sequence of split names aligned with `stimulus_ids`, or None for a random (or, given `labels`,
    stratified) `test_fraction` split with `seed`. images: uint8 (N, H, W, 3) aligned with the ids, or a
    StimulusSet, or None.
    """
    ids = [str(i) for i in stimulus_ids]
    if split is None:
        split = (random_split(ids, test_fraction, seed) if labels is None
                 else stratified_split(ids, labels, test_fraction, seed))
    stimuli = images
    if images is not None and not isinstance(images, StimulusSet):
        stimuli = StimulusSet.from_array(np.asarray(images), ids)
    return from_trials(name, modality, dict(trials), ids, split, stimuli=stimuli, ceiling_split=ceiling_split,
                       source=source)


def _read_stimuli_csv(folder: pathlib.Path) -> pd.DataFrame:
    path = folder / "stimuli.csv"
    if not path.is_file():
        raise FileNotFoundError(f"generic data: expected file not found: {path}")
    table = pd.read_csv(path, dtype={"stimulus_id": str})
    if "stimulus_id" not in table.columns:
        raise GenericFormatError(f"{path}: missing column 'stimulus_id' (has {list(table.columns)})")
    dup = table["stimulus_id"][table["stimulus_id"].duplicated()].tolist()
    if dup:
        raise GenericFormatError(f"{path}: duplicate stimulus ids {dup[:5]}")
    if "split" in table.columns:
        bad = sorted(set(table["split"]) - {"train", "test"})
        if bad:
            raise GenericFormatError(f"{path}: split values must be train/test, found {bad}")
    return table


def _trials_from_npy(folder: pathlib.Path) -> dict[tuple[str, str], np.ndarray]:
    trials = {}
    for p in sorted(folder.glob("trials_*.npy")):
        parts = p.stem.split("_")
        if len(parts) != 3:
            raise GenericFormatError(f"{p}: expected trials_<subject>_<roi>.npy with no '_' inside the names")
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise GenericFormatError(f"{p}: not a numeric .npy array ({exc})") from exc
        if not np.issubdtype(arr.dtype, np.number):
            raise GenericFormatError(f"{p}: dtype {arr.dtype}, expected numbers")
        trials[(parts[1], parts[2])] = arr
    return trials


def _trials_from_csv(path: pathlib.Path, ids: list[str]) -> dict[tuple[str, str], np.ndarray]:
    table = pd.read_csv(path, dtype={"stimulus_id": str, "subject": str, "roi": str})
    need = ["subject", "roi", "unit", "stimulus_id", "repeat", "value"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise GenericFormatError(f"{path}: missing columns {missing}")
    pos = {i: k for k, i in enumerate(ids)}
    unknown = sorted(set(table["stimulus_id"]) - set(pos))
    if unknown:
        raise GenericFormatError(f"{path}: stimulus ids not in stimuli.csv: {unknown[:5]}")
    trials = {}
    for (subject, roi), part in table.groupby(["subject", "roi"], sort=False):
        units = {u: k for k, u in enumerate(dict.fromkeys(part["unit"]))}
        reps = {r: k for k, r in enumerate(sorted(set(part["repeat"])))}
        arr = np.full((len(units), len(ids), len(reps)), np.nan)
        u = part["unit"].map(units).to_numpy()
        s = part["stimulus_id"].map(pos).to_numpy()
        r = part["repeat"].map(reps).to_numpy()
        flat = np.ravel_multi_index((u, s, r), arr.shape)
        if np.unique(flat).size != flat.size:
            raise GenericFormatError(f"{path}: subject {subject!r}, ROI {roi!r}: a (unit, stimulus, repeat) "
                                     f"appears more than once")
        arr[u, s, r] = part["value"].to_numpy(np.float64)
        trials[(str(subject), str(roi))] = arr
    return trials


def load_generic(source_dir, name: str = "generic", modality: str = "ephys", test_fraction: float = 0.1,
                 seed: int = 42, ceiling_split: str = "") -> NeuralDataset:
    """Reads a generic trials folder (see the module docstring) into a NeuralDataset."""
    folder = pathlib.Path(source_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"generic data folder not found: {folder}")
    table = _read_stimuli_csv(folder)
    ids = table["stimulus_id"].tolist()
    trials = _trials_from_npy(folder)
    if not trials and (folder / "trials.csv").is_file():
        trials = _trials_from_csv(folder / "trials.csv", ids)
    if not trials:
        raise FileNotFoundError(f"generic data {folder}: no trials_<subject>_<roi>.npy files and no trials.csv")
    for (subject, roi), arr in trials.items():
        if arr.ndim < 3 or arr.shape[-2] != len(ids):
            raise GenericFormatError(f"{folder}: subject {subject!r}, ROI {roi!r}: trials shape {arr.shape}, "
                                     f"expected (..., {len(ids)} stimuli from stimuli.csv, repeats)")
    split = table["split"].tolist() if "split" in table.columns else None
    labels = table["label"].tolist() if "label" in table.columns else None
    stimuli = None
    if "image" in table.columns:
        stimuli = StimulusSet.from_folder(folder, ids=ids, members=table["image"].astype(str).tolist())
    elif (folder / "images").is_dir():
        by_stem = {p.stem: p.name for p in (folder / "images").iterdir() if p.is_file()}
        missing = [i for i in ids if i not in by_stem]
        if missing:
            raise GenericFormatError(f"{folder / 'images'}: no image for stimulus ids {missing[:5]}")
        stimuli = StimulusSet.from_folder(folder / "images", ids=ids, members=[by_stem[i] for i in ids])
    return from_arrays(trials, ids, name=name, modality=modality, split=split, labels=labels,
                       test_fraction=test_fraction, seed=seed, images=stimuli,
                       ceiling_split=ceiling_split or None, source=str(folder))


# ---------------------------------------------------------------------------------------------------------------
# RDM-only data

def square_rdm(rdm, n: int | None = None, where: str = "RDM", symmetric: bool = True) -> np.ndarray:
    """A square (n, n) float64 matrix from a square matrix or (symmetric only) a condensed upper triangle."""
    a = np.asarray(rdm, dtype=np.float64)
    if a.ndim == 2 and a.shape[0] == a.shape[1]:
        out = a
    elif not symmetric:
        raise GenericFormatError(f"{where}: shape {a.shape}; a matrix that need not be symmetric must be square")
    else:
        v = a.reshape(-1)
        k = int(round((1 + np.sqrt(1 + 8 * v.size)) / 2))
        if k * (k - 1) // 2 != v.size:
            raise GenericFormatError(f"{where}: {v.size} values are neither a square matrix nor an upper triangle")
        from scipy.spatial.distance import squareform

        out = squareform(v, checks=False)
    if n is not None and out.shape[0] != n:
        raise GenericFormatError(f"{where}: {out.shape[0]} stimuli, expected {n}")
    if not np.isfinite(out).all():
        raise GenericFormatError(f"{where}: NaN/inf entries")
    if symmetric and not np.allclose(out, out.T, atol=1e-6):
        raise GenericFormatError(f"{where}: not symmetric (load split-half matrices with symmetric=False)")
    return out


@dataclasses.dataclass
class RDMSet:
    """Named (n, n) matrices over one ordered list of stimulus ids, with the images when known.

    kind: "dissimilarity" (RDMs) or "similarity" (RSMs); symmetric: False for matrices such as split-half
    similarities, which are then kept as given. groups: e.g. ROI -> the names of its per-subject matrices.
    """

    name: str
    stimulus_ids: list[str]
    rdms: dict[str, np.ndarray]
    stimuli: StimulusSet | None = None
    groups: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    kind: str = "dissimilarity"
    symmetric: bool = True

    def __post_init__(self):
        from jaxbrain.metrics.similarity import SIMILARITY_KINDS

        n = len(self.stimulus_ids)
        if len(set(self.stimulus_ids)) != n:
            raise GenericFormatError(f"RDM set {self.name!r}: duplicate stimulus ids")
        if self.kind not in SIMILARITY_KINDS:
            raise GenericFormatError(f"RDM set {self.name!r}: kind {self.kind!r} not one of {SIMILARITY_KINDS}")
        self.rdms = {k: square_rdm(v, n, f"RDM set {self.name!r}, RDM {k!r}", self.symmetric)
                     for k, v in self.rdms.items()}
        for group, members in self.groups.items():
            unknown = [m for m in members if m not in self.rdms]
            if unknown:
                raise GenericFormatError(f"RDM set {self.name!r}, group {group!r}: unknown RDMs {unknown}")

    def condensed(self, key: str) -> np.ndarray:
        """The upper triangle (scipy pdist order) of one RDM."""
        iu = np.triu_indices(len(self.stimulus_ids), 1)
        return self.rdms[key][iu]

    def subject_matrices(self, group: str) -> np.ndarray:
        """(subjects, n, n) stack of the matrices in `group`, in the group's order."""
        if group not in self.groups:
            raise KeyError(f"RDM set {self.name!r}: no group {group!r} (has {sorted(self.groups)})")
        return np.stack([self.rdms[k] for k in self.groups[group]])


def _mat_str(x) -> str:
    return str(np.asarray(x).reshape(-1)[0])


def load_kriegeskorte92(source_dir) -> RDMSet:
    """The 92-images RDMs and stimuli (see the module docstring); ids "obj01".."obj92" in the release order."""
    from scipy.io import loadmat

    folder = pathlib.Path(source_dir)
    path = folder / "Kriegeskorte_Neuron2008_supplementalData.mat"
    if not path.is_file():
        raise FileNotFoundError(f"92-images data: expected file not found: {path}")
    mat = loadmat(path)
    for key in ("stimuli_92objs", "RDMs_mIT_hIT_fig1"):
        if key not in mat:
            raise GenericFormatError(f"{path}: missing variable {key!r}")
    stim = mat["stimuli_92objs"].reshape(-1)
    n = stim.size
    ids = [f"obj{k + 1:02d}" for k in range(n)]
    images = np.stack([np.asarray(s["image"], dtype=np.uint8) for s in stim])
    rdms, groups = {}, {}
    for entry in mat["RDMs_mIT_hIT_fig1"].reshape(-1):
        rdms[_mat_str(entry["name"])] = entry["RDM"]
    brain = folder / "92_brainRDMs.mat"
    if brain.is_file():
        arr = loadmat(brain)["RDMs"]
        names = []
        for entry in arr.reshape(-1, order="F"):
            key = _mat_str(entry["name"]).replace(" ", "")
            rdms[key] = entry["RDM"]
            names.append(key)
        groups["hIT_subject_sessions"] = names
    return RDMSet(name="kriegeskorte92", stimulus_ids=ids, rdms=rdms, stimuli=StimulusSet.from_array(images, ids),
                  groups=groups)


def load_rdm_folder(source_dir, symmetric: bool = True) -> RDMSet:
    """`rdm_<name>.npy` or `rsm_<name>.npy` files over the ids of `stimuli.csv` (see the module docstring).

    symmetric=False accepts matrices that are not symmetric (e.g. split-half similarities); they must be square.
    """
    folder = pathlib.Path(source_dir)
    table = _read_stimuli_csv(folder)
    ids = table["stimulus_id"].tolist()
    files = {prefix: sorted(folder.glob(f"{prefix}_*.npy")) for prefix in ("rdm", "rsm")}
    if files["rdm"] and files["rsm"]:
        raise GenericFormatError(f"RDM folder {folder}: both rdm_*.npy (dissimilarities) and rsm_*.npy "
                                 "(similarities); a set holds one kind")
    prefix = "rsm" if files["rsm"] else "rdm"
    if not files[prefix]:
        raise FileNotFoundError(f"RDM folder {folder}: no rdm_<name>.npy or rsm_<name>.npy files")
    rdms, groups = {}, {}
    for p in files[prefix]:
        name = p.stem[len(prefix) + 1:]
        rdms[name] = square_rdm(np.load(p, allow_pickle=False), len(ids), str(p), symmetric)
        if "_" in name:
            groups.setdefault(name.rsplit("_", 1)[1], []).append(name)
    stimuli = None
    if "image" in table.columns:
        stimuli = StimulusSet.from_folder(folder, ids=ids, members=table["image"].astype(str).tolist())
    return RDMSet(name=folder.name, stimulus_ids=ids, rdms=rdms, stimuli=stimuli, groups=groups,
                  kind="similarity" if prefix == "rsm" else "dissimilarity", symmetric=symmetric)
