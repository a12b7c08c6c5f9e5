"""NeuralDataset: one benchmark's responses, splits, noise ceilings and stimuli, with HDF5 IO and validation.

On disk a dataset is one HDF5 file in the layout the reference code reads:

    attrs:   name, modality, subjects, rois, splits, max_nc (= 100), target_filter (which targets are scored),
             subject_specific_stimulus_set (True when ids are per subject, as the reference's NSD file says)
    {split}/stimulus_ids                     (n_stim,) str        -- shared by all subjects, or
    {split}/stimulus_ids/{subject}           (n_stim,) str        -- subject-specific (NSD)
    {split}/neural_data/{subject}/{roi}      (n_stim, n_targets) or (n_stim, n_channels, n_times) float
    noise_ceilings/{subject}/{roi}           (n_targets,) or (n_channels, n_times), percent explained variance
    stimuli/                                 the StimulusSet (see jaxbrain.data.stimulus_set)
    targets/coordinates/{subject}/{roi}      optional (n_targets, 3) voxel indices (fMRI), with
    targets/volumes/{subject}/{shape,affine} the subject's volume shape (3,) and affine (4, 4)
    targets/channels/{subject}/{roi}         optional channel names of channel x time targets (EEG/MEG), with
    targets/times                            the time of each sample in seconds

Build one from raw trials with `from_trials`; write it with `save` (atomic) and read it with `load`.
Scoring asks `dataset.scored_targets(subject, roi, min_ceiling)` which targets count; the answer follows the
dataset's `target_filter` (jaxbrain.metrics.scored_target_mask): "noise_ceiling" (NC >= min_ceiling), "ceiling_root"
(sqrt(NC/100) > 0.1, channel x time targets) or "released" (the release's own filter, applied at preparation).
A file without the attribute gets "ceiling_root" for EEG/MEG and "noise_ceiling" otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence

import h5py
import numpy as np

from jaxbrain.features import store
from jaxbrain.data.stimulus_set import StimulusSet

MODALITIES = ("ephys", "fmri", "eeg", "meg")
MAX_NC = 100.0
_NC_TOLERANCE = 1e-4


class NeuralDataError(ValueError):
    """A dataset (in memory or on disk) breaks the NeuralDataset contract."""


def _where(source, split=None, subject=None, roi=None) -> str:
    parts = [str(source)]
    if split is not None:
        parts.append(f"split {split!r}")
    if subject is not None:
        parts.append(f"subject {subject!r}")
    if roi is not None:
        parts.append(f"ROI {roi!r}")
    return ", ".join(parts)


@dataclasses.dataclass
class NeuralDataset:
    """A benchmark: responses per (split, subject, ROI), stimulus ids per split, noise ceilings per target.

    `responses[(split, subject, roi)]` is (n_stim, n_targets) or (n_stim, n_channels, n_times); its rows follow
    `ids(split, subject)`. `noise_ceilings[(subject, roi)]` has the response shape without the stimulus axis,
    in percent explained variance (at most `max_nc`).
    """

    name: str
    modality: str
    subjects: list[str]
    rois: list[str]
    splits: list[str]
    stimulus_ids: dict
    responses: dict
    noise_ceilings: dict
    stimuli: StimulusSet | None = None
    max_nc: float = MAX_NC
    digest: str = ""  # content digest of the file it was loaded from (checksums of every array and the stimuli)
    target_filter: str | None = None    # None: by modality (see `scoring_filter`)
    # Where each target is, for per-target maps (all optional): voxel indices per (subject, roi) and each subject's
    # volume {"shape": (X, Y, Z), "affine": (4, 4)} (fMRI); channel names per (subject, roi) and sample times in
    # seconds (EEG/MEG).
    coordinates: dict = dataclasses.field(default_factory=dict)
    volumes: dict = dataclasses.field(default_factory=dict)
    channels: dict = dataclasses.field(default_factory=dict)
    times: np.ndarray | None = None

    def ids(self, split: str, subject: str) -> np.ndarray:
        """Stimulus ids (str array) of `split` as seen by `subject`."""
        if split not in self.stimulus_ids:
            raise KeyError(f"dataset {self.name!r}: no split {split!r} (has {list(self.stimulus_ids)})")
        ids = self.stimulus_ids[split]
        if isinstance(ids, Mapping):
            if subject not in ids:
                raise KeyError(f"dataset {self.name!r}, split {split!r}: no stimulus ids for subject {subject!r}")
            ids = ids[subject]
        return np.asarray(ids).astype(str)

    def subject_specific_ids(self) -> bool:
        return any(isinstance(v, Mapping) for v in self.stimulus_ids.values())

    def _response(self, split, subject, roi) -> np.ndarray:
        key = (split, subject, roi)
        if key not in self.responses:
            raise KeyError(f"dataset {self.name!r}: no responses for split {split!r}, subject {subject!r}, "
                           f"ROI {roi!r}")
        return np.asarray(self.responses[key])

    def targets(self, split: str, subject: str, roi: str) -> np.ndarray:
        """Responses as a 2-D float array (n_stim, n_targets); channel x time targets are flattened."""
        r = self._response(split, subject, roi)
        return r.reshape(r.shape[0], -1)

    def ceiling(self, subject: str, roi: str) -> np.ndarray:
        """Noise ceilings (percent) as a 1-D array, flattened like `targets`."""
        key = (subject, roi)
        if key not in self.noise_ceilings:
            raise KeyError(f"dataset {self.name!r}: no noise ceiling for subject {subject!r}, ROI {roi!r}")
        return np.asarray(self.noise_ceilings[key]).reshape(-1)

    @property
    def scoring_filter(self) -> str:
        """The target filter scoring applies: the declared one, else by modality."""
        if self.target_filter is not None:
            return self.target_filter
        return "ceiling_root" if self.modality in ("eeg", "meg") else "noise_ceiling"

    def scored_targets(self, subject: str, roi: str, min_ceiling: float = 10.0) -> np.ndarray:
        """Boolean mask over the flattened targets of (subject, ROI) that scoring keeps (`scoring_filter`)."""
        from jaxbrain.metrics.ceiling import scored_target_mask

        return scored_target_mask(self.ceiling(subject, roi), self.scoring_filter, min_ceiling)

    def target_shape(self, subject: str, roi: str) -> tuple[int, ...]:
        return tuple(np.shape(self.noise_ceilings[(subject, roi)]))

    def validate(self, source: str = "<memory>") -> None:
        """Raises NeuralDataError naming `source`, split, subject, ROI and the fault; returns None when valid."""
        validate(self, source)


# ---------------------------------------------------------------------------------------------------------------
# validation

def _check_names(values, what, source):
    values = list(values)
    if not values:
        raise NeuralDataError(f"{source}: no {what}")
    for v in values:
        if not isinstance(v, str) or not v or "/" in v:
            raise NeuralDataError(f"{source}: {what} name {v!r} must be a non-empty string without '/'")
    if len(set(values)) != len(values):
        raise NeuralDataError(f"{source}: duplicate {what} in {values}")


def _check_ids(ids, where) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise NeuralDataError(f"{where}: stimulus ids must be 1-D, got shape {ids.shape}")
    if ids.size == 0:
        raise NeuralDataError(f"{where}: no stimulus ids")
    ids = ids.astype(str)
    if np.any(ids == ""):
        raise NeuralDataError(f"{where}: empty stimulus id")
    uniq, counts = np.unique(ids, return_counts=True)
    if uniq.size != ids.size:
        raise NeuralDataError(f"{where}: duplicate stimulus ids {uniq[counts > 1][:5].tolist()}")
    return ids


def _check_array(a, where, n_stim):
    a = np.asarray(a)
    if a.ndim not in (2, 3):
        raise NeuralDataError(f"{where}: responses must be (n_stim, n_targets) or (n_stim, n_channels, n_times), "
                              f"got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise NeuralDataError(f"{where}: responses dtype {a.dtype}, expected float")
    if a.shape[0] != n_stim:
        raise NeuralDataError(f"{where}: shape mismatch: {a.shape[0]} response rows for {n_stim} stimulus ids")
    if a.size == 0 or a.shape[1] == 0:
        raise NeuralDataError(f"{where}: no targets (shape {a.shape})")
    bad = ~np.isfinite(a)
    if bad.any():
        kind = "NaN" if np.isnan(a).any() else "inf"
        rows = np.unique(np.nonzero(bad)[0])
        raise NeuralDataError(f"{where}: {int(bad.sum())} {kind}/non-finite values (stimulus rows {rows[:5].tolist()})")
    if a.shape[0] > 1:
        flat = a.reshape(a.shape[0], -1)
        const = np.flatnonzero(np.all(flat == flat[:1], axis=0))
        if const.size:
            raise NeuralDataError(f"{where}: {const.size} constant targets across stimuli "
                                  f"(flat target indices {const[:5].tolist()})")
    return a


def validate(ds: NeuralDataset, source: str = "<memory>") -> None:
    """Checks `ds` against the NeuralDataset contract; raises NeuralDataError naming where and what."""
    src = f"{source} (dataset {ds.name!r})" if source == "<memory>" else str(source)
    if ds.modality not in MODALITIES:
        raise NeuralDataError(f"{src}: modality {ds.modality!r} not one of {MODALITIES}")
    from jaxbrain.metrics.ceiling import TARGET_FILTERS

    if ds.target_filter is not None and ds.target_filter not in TARGET_FILTERS:
        raise NeuralDataError(f"{src}: target_filter {ds.target_filter!r} not one of {TARGET_FILTERS}")
    _check_names(ds.subjects, "subjects", src)
    _check_names(ds.rois, "ROIs", src)
    _check_names(ds.splits, "splits", src)
    ids_of = _checked_split_ids(ds, src)
    expected = {(sp, su, r) for sp in ds.splits for su in ds.subjects for r in ds.rois}
    extra = set(ds.responses) - expected
    if extra:
        raise NeuralDataError(f"{src}: responses for undeclared (split, subject, ROI) {sorted(extra)[:3]}")
    extra = set(ds.noise_ceilings) - {(su, r) for su in ds.subjects for r in ds.rois}
    if extra:
        raise NeuralDataError(f"{src}: noise ceilings for undeclared (subject, ROI) {sorted(extra)[:3]}")
    for subject in ds.subjects:
        for roi in ds.rois:
            if (subject, roi) not in ds.noise_ceilings:
                raise NeuralDataError(f"{_where(src, None, subject, roi)}: missing noise ceilings")
            nc = np.asarray(ds.noise_ceilings[(subject, roi)])
            where = _where(src, None, subject, roi)
            if not np.issubdtype(nc.dtype, np.floating) or not np.isfinite(nc).all():
                raise NeuralDataError(f"{where}: noise ceilings must be finite floats "
                                      f"({int((~np.isfinite(nc.astype(float))).sum())} non-finite)")
            if nc.size and nc.max() > ds.max_nc + _NC_TOLERANCE:
                raise NeuralDataError(f"{where}: noise ceiling {float(nc.max()):.4g} exceeds max_nc={ds.max_nc}")
            for split in ds.splits:
                where = _where(src, split, subject, roi)
                if (split, subject, roi) not in ds.responses:
                    raise NeuralDataError(f"{where}: missing responses")
                a = _check_array(ds.responses[(split, subject, roi)], where, len(ids_of[(split, subject)]))
                if a.shape[1:] != nc.shape:
                    raise NeuralDataError(f"{where}: shape mismatch: targets {a.shape[1:]} vs noise ceilings "
                                          f"{nc.shape}")
    _check_target_info(ds, src)


def _checked_split_ids(ds: NeuralDataset, src: str) -> dict[tuple[str, str], np.ndarray]:
    """(split, subject) -> stimulus ids, checked: declared splits and subjects, no id in two splits of a subject,
    every id in the stimulus set."""
    extra = set(ds.stimulus_ids) - set(ds.splits)
    if extra:
        raise NeuralDataError(f"{src}: stimulus ids for undeclared splits {sorted(extra)}")
    stim_known = set(ds.stimuli.ids) if ds.stimuli is not None else None
    seen_ids: dict[str, dict[str, str]] = {s: {} for s in ds.subjects}
    ids_of: dict[tuple[str, str], np.ndarray] = {}
    for split in ds.splits:
        if split not in ds.stimulus_ids:
            raise NeuralDataError(f"{_where(src, split)}: missing stimulus ids")
        per = ds.stimulus_ids[split]
        if isinstance(per, Mapping) and set(per) - set(ds.subjects):
            raise NeuralDataError(f"{_where(src, split)}: stimulus ids for unknown subjects "
                                  f"{sorted(set(per) - set(ds.subjects))}")
        for subject in ds.subjects:
            where = _where(src, split, subject)
            if isinstance(per, Mapping) and subject not in per:
                raise NeuralDataError(f"{where}: missing stimulus ids")
            ids = ids_of[(split, subject)] = _check_ids(per[subject] if isinstance(per, Mapping) else per, where)
            for i in ids.tolist():
                other = seen_ids[subject].setdefault(i, split)
                if other != split:
                    raise NeuralDataError(f"{where}: stimulus id {i!r} is also in split {other!r}")
            missing = [] if stim_known is None else [i for i in ids.tolist() if i not in stim_known]
            if missing:
                raise NeuralDataError(f"{where}: {len(missing)} stimulus ids have no image in the stimulus set, "
                                      f"e.g. {missing[:3]}")
    return ids_of


def _check_target_info(ds: NeuralDataset, src: str) -> None:
    """Coordinates and channel names must have one entry per target; times one per sample."""
    for (subject, roi), xyz in ds.coordinates.items():
        where = _where(src, None, subject, roi)
        xyz, n = np.asarray(xyz), int(np.prod(ds.target_shape(subject, roi)))
        if xyz.shape != (n, 3):
            raise NeuralDataError(f"{where}: coordinates of shape {xyz.shape}, expected ({n}, 3)")
        volume = ds.volumes.get(subject)
        if volume is None or np.any(xyz < 0) or np.any(xyz >= np.asarray(volume["shape"])):
            raise NeuralDataError(f"{where}: coordinates lie outside the subject's volume "
                                  f"{None if volume is None else tuple(volume['shape'])}")
    for (subject, roi), names in ds.channels.items():
        shape = ds.target_shape(subject, roi)
        if len(shape) != 2 or len(names) != shape[0]:
            raise NeuralDataError(f"{_where(src, None, subject, roi)}: {len(names)} channel names for targets "
                                  f"shaped {shape}")
        if ds.times is not None and len(ds.times) != shape[1]:
            raise NeuralDataError(f"{_where(src, None, subject, roi)}: {len(ds.times)} sample times for "
                                  f"{shape[1]} samples")


# ---------------------------------------------------------------------------------------------------------------
# building from trials

def random_split(ids: Sequence[str], test_fraction: float = 0.1, seed: int = 42) -> dict[str, str]:
    """id -> "train"/"test": round(test_fraction * N) ids drawn uniformly without replacement."""
    ids = [str(i) for i in ids]
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction}: must be in (0, 1)")
    n_test = max(1, int(round(test_fraction * len(ids))))
    test = set(np.random.default_rng(seed).choice(len(ids), size=n_test, replace=False).tolist())
    return {i: ("test" if k in test else "train") for k, i in enumerate(ids)}


def stratified_order(labels: Sequence, test_fraction: float = 0.1, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, test positions) of a stratified split, each in the shuffled order that scikit-learn's
    `train_test_split(range(n), stratify=labels, test_size=test_fraction, random_state=seed)` returns.

    The paper's reference keeps this order for the train split, so its contiguous outer-CV folds (and possibly
    the committed layer) depend on it. It is StratifiedShuffleSplit's first split, which train_test_split uses.
    """
    from sklearn.model_selection import StratifiedShuffleSplit

    labels = np.asarray(labels)
    sss = StratifiedShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    train, test = next(sss.split(np.zeros(len(labels)), labels))
    return train, test


def stratified_split(ids: Sequence[str], labels: Sequence, test_fraction: float = 0.1,
                     seed: int = 42) -> dict[str, str]:
    """id -> "train"/"test" with the test share of every label as close to `test_fraction` as possible
    (`stratified_order`, scikit-learn's StratifiedShuffleSplit with `random_state=seed`)."""
    ids = [str(i) for i in ids]
    if len(labels) != len(ids):
        raise ValueError(f"stratified_split: {len(labels)} labels for {len(ids)} ids")
    _, test_idx = stratified_order(labels, test_fraction, seed)
    test = set(test_idx.tolist())
    return {i: ("test" if k in test else "train") for k, i in enumerate(ids)}


def _split_names(assigned: Sequence[str]) -> list[str]:
    order = {"train": 0, "test": 1}
    return sorted(set(assigned), key=lambda s: (order.get(s, 2), s))


def from_trials(name: str, modality: str, trials: Mapping[tuple[str, str], np.ndarray],
                stimulus_ids: Sequence[str] | Mapping[str, Sequence[str]],
                split_of: Mapping[str, str] | Sequence[str] | Callable[[str], str], *,
                stimuli: StimulusSet | None = None, ceiling_split: str | None = None,
                n_averaged: float | None = None, ceiling_zscore: str = "repeat",
                noise_ceilings: Mapping[tuple[str, str], np.ndarray] | None = None,
                dtype=np.float32, source: str = "<trials>") -> NeuralDataset:
    """Builds a validated NeuralDataset from single-trial responses.

    trials: {(subject, roi): array (*target_shape, n_stimuli, n_repeats)}, usually (units, stimuli, repeats) or
        (channels, times, stimuli, repeats); NaN marks a missing repeat. The stimulus axis follows
        `stimulus_ids` (one list shared by all subjects, or {subject: ids}).
    split_of: the split of each stimulus: a mapping id -> split, a sequence of split names aligned with the
        stimulus ids, or a callable id -> split. Within a split, stimuli keep their order in `stimulus_ids`.
    Responses are the mean over the available repeats (nanmean), stored as `dtype`.
    Noise ceilings come from `jaxbrain.metrics.noise_ceiling` on the trials of the stimuli in `ceiling_split`
    (all stimuli when None), with `n_averaged` repeats assumed in the scored responses (None: the repeats actually
    averaged per stimulus, i.e. the mean of 1/n_i over stimuli). Every stimulus used for the ceiling needs at least
    2 repeats. `ceiling_zscore` is passed to the estimator: "repeat" z-scores each (unit, repeat) across stimuli
    (the published method), "unit" each unit over all its trials. Pass `noise_ceilings` to use precomputed
    ceilings instead (e.g. from a release's ncsnr).
    Every stimulus needs at least one repeat; NaN/inf in repeats that are present is an error (never dropped).
    """
    subjects = list(dict.fromkeys(s for s, _ in trials))
    rois = list(dict.fromkeys(r for _, r in trials))
    missing = [(s, r) for s in subjects for r in rois if (s, r) not in trials]
    if missing:
        raise NeuralDataError(f"{source}: trials missing for (subject, ROI) {missing[:3]}")
    ids, labels = _ids_and_splits(subjects, stimulus_ids, split_of, source)
    splits = _split_names([str(s) for v in labels.values() for s in v])
    if ceiling_split is not None and ceiling_split not in splits:
        raise NeuralDataError(f"{source}: ceiling_split {ceiling_split!r} not among splits {splits}")
    stim_ids: dict = {sp: {subject: ids[subject][labels[subject] == sp] for subject in subjects} for sp in splits}
    if not isinstance(stimulus_ids, Mapping):
        stim_ids = {sp: next(iter(v.values())) for sp, v in stim_ids.items()}
    responses, ceilings = {}, {}
    for (subject, roi), t in trials.items():
        where = _where(source, None, subject, roi)
        t = _checked_trials(t, ids[subject], where)
        with np.errstate(invalid="ignore"):
            mean = np.moveaxis(np.nanmean(t, axis=-1), -1, 0).astype(dtype)  # (stimuli, *targets)
        for sp in splits:
            responses[(sp, subject, roi)] = mean[labels[subject] == sp]
        if noise_ceilings is not None:
            if (subject, roi) not in noise_ceilings:
                raise NeuralDataError(f"{where}: no precomputed noise ceiling")
            ceilings[(subject, roi)] = np.asarray(noise_ceilings[(subject, roi)], dtype=np.float64)
        else:
            use = np.ones(len(ids[subject]), bool) if ceiling_split is None else labels[subject] == ceiling_split
            ceilings[(subject, roi)] = _ceiling_of(t, use, ids[subject], n_averaged, ceiling_zscore, where)
    ds = NeuralDataset(name=name, modality=modality, subjects=subjects, rois=rois, splits=splits,
                       stimulus_ids=stim_ids, responses=responses, noise_ceilings=ceilings, stimuli=stimuli)
    ds.validate(source)
    return ds


def _ids_and_splits(subjects, stimulus_ids, split_of, source) -> tuple[dict, dict]:
    """Per subject its stimulus ids and the split of each (arrays of str), checked."""
    per_subject = isinstance(stimulus_ids, Mapping)
    ids, labels = {}, {}
    for subject in subjects:
        if per_subject and subject not in stimulus_ids:
            raise NeuralDataError(f"{_where(source, None, subject)}: no stimulus ids")
        own = [str(i) for i in (stimulus_ids[subject] if per_subject else stimulus_ids)]
        _check_ids(own, _where(source, None, subject))
        if callable(split_of) and not isinstance(split_of, Mapping):
            split = [str(split_of(i)) for i in own]
        elif isinstance(split_of, Mapping):
            absent = [i for i in own if i not in split_of]
            if absent:
                raise NeuralDataError(f"{_where(source, None, subject)}: no split for stimulus ids {absent[:3]}")
            split = [str(split_of[i]) for i in own]
        elif per_subject:
            raise NeuralDataError(f"{source}: with per-subject stimulus ids, split_of must map id -> split")
        elif len(split_of) != len(own):
            raise NeuralDataError(f"{source}: {len(split_of)} split labels for {len(own)} stimulus ids")
        else:
            split = [str(s) for s in split_of]
        ids[subject], labels[subject] = np.asarray(own), np.asarray(split)
    return ids, labels


def _checked_trials(t, ids: np.ndarray, where: str) -> np.ndarray:
    """Trials (*targets, stimuli, repeats) as float64; every stimulus needs a repeat, none may be infinite."""
    t = np.asarray(t, dtype=np.float64)
    if t.ndim < 3 or t.shape[-2] != len(ids):
        raise NeuralDataError(f"{where}: trials shape {t.shape}, expected (*targets, {len(ids)} stimuli, repeats)")
    if np.isinf(t).any():
        raise NeuralDataError(f"{where}: {int(np.isinf(t).sum())} infinite trial values")
    empty = np.flatnonzero((np.isfinite(t).sum(-1) == 0).reshape(-1, len(ids)).any(0))
    if empty.size:
        raise NeuralDataError(f"{where}: {empty.size} stimuli have no valid repeat for some target, "
                              f"e.g. {ids[empty[:3]].tolist()}")
    return t


def _ceiling_of(t: np.ndarray, use: np.ndarray, ids: np.ndarray, n_averaged, zscore: str, where: str) -> np.ndarray:
    """Noise ceiling per target from the trials of the stimuli `use` (each needs at least 2 repeats)."""
    from jaxbrain.metrics import noise_ceiling

    flat = t.reshape(-1, len(ids), t.shape[-1])[:, use]
    few = np.flatnonzero((np.isfinite(flat).sum(-1) < 2).any(0))
    if few.size:
        raise NeuralDataError(f"{where}: {few.size} stimuli have fewer than 2 repeats, so no noise ceiling "
                              f"can be estimated from them (e.g. {ids[use][few[:3]].tolist()}); pass "
                              f"ceiling_split= the split with repeats, or precomputed noise_ceilings")
    nc = np.asarray(noise_ceiling(flat, n_averaged=n_averaged, zscore=zscore), dtype=np.float64)
    return nc.reshape(t.shape[:-2])


# ---------------------------------------------------------------------------------------------------------------
# HDF5 IO

def _str_array(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=object)


def _write(ds: NeuralDataset, f: h5py.File, embed_stimuli: bool, stimuli_digest: str) -> None:
    str_dt = h5py.string_dtype()
    f.attrs["name"] = ds.name
    f.attrs["modality"] = ds.modality
    f.attrs.create("subjects", _str_array(ds.subjects), dtype=str_dt)
    f.attrs.create("rois", _str_array(ds.rois), dtype=str_dt)
    f.attrs.create("splits", _str_array(ds.splits), dtype=str_dt)
    f.attrs["max_nc"] = float(ds.max_nc)
    f.attrs["target_filter"] = ds.scoring_filter
    f.attrs["subject_specific_stimulus_set"] = ds.subject_specific_ids()
    for split in ds.splits:
        ids = ds.stimulus_ids[split]
        if isinstance(ids, Mapping):
            for subject in ds.subjects:
                f.create_dataset(f"{split}/stimulus_ids/{subject}", data=_str_array(ids[subject]), dtype=str_dt)
        else:
            f.create_dataset(f"{split}/stimulus_ids", data=_str_array(ids), dtype=str_dt)
        for subject in ds.subjects:
            for roi in ds.rois:
                f.create_dataset(f"{split}/neural_data/{subject}/{roi}",
                                 data=np.asarray(ds.responses[(split, subject, roi)]))
    for subject in ds.subjects:
        for roi in ds.rois:
            f.create_dataset(f"noise_ceilings/{subject}/{roi}", data=np.asarray(ds.noise_ceilings[(subject, roi)]))
    _write_target_info(ds, f)
    if ds.stimuli is not None:
        group = f.create_group("stimuli")
        ds.stimuli.to_hdf5(group, embed=embed_stimuli)
        group.attrs["digest"] = stimuli_digest
    f.attrs["checksums"] = json.dumps(_checksums(f), sort_keys=True)


def _write_target_info(ds: NeuralDataset, f: h5py.File) -> None:
    for (subject, roi), xyz in ds.coordinates.items():
        f.create_dataset(f"targets/coordinates/{subject}/{roi}", data=np.asarray(xyz, np.int32))
    for subject, volume in ds.volumes.items():
        f.create_dataset(f"targets/volumes/{subject}/shape", data=np.asarray(volume["shape"], np.int64))
        f.create_dataset(f"targets/volumes/{subject}/affine", data=np.asarray(volume["affine"], np.float64))
    for (subject, roi), names in ds.channels.items():
        f.create_dataset(f"targets/channels/{subject}/{roi}", data=_str_array(names), dtype=h5py.string_dtype())
    if ds.times is not None:
        f.create_dataset("targets/times", data=np.asarray(ds.times, np.float64))


def _read_target_info(f: h5py.File, verifier: "_Verifier") -> dict:
    """coordinates, volumes, channels and times as stored by `_write_target_info` (checked against checksums)."""
    info = {"coordinates": {}, "volumes": {}, "channels": {}, "times": None}
    if "targets" not in f:
        return info

    def visit(name, node):
        if not isinstance(node, h5py.Dataset):
            return
        verifier.check(f, f"targets/{name}")
        kind, *rest = name.split("/")
        if kind == "coordinates":
            info["coordinates"][tuple(rest)] = node[()]
        elif kind == "volumes":
            info["volumes"].setdefault(rest[0], {})[rest[1]] = node[()]
        elif kind == "channels":
            info["channels"][tuple(rest)] = _strings(node[()])
        elif kind == "times":
            info["times"] = node[()]

    f["targets"].visititems(visit)
    return info


def _node_digest(node: h5py.Dataset) -> str:
    """SHA-256 of one HDF5 dataset's dtype kind, shape and values (strings joined by NUL)."""
    data = node[()]
    digest = hashlib.sha256(f"{node.dtype.kind}{node.shape}".encode())
    if node.dtype.kind in "OSU":
        digest.update("\x00".join(_strings(data)).encode())
    else:
        digest.update(np.ascontiguousarray(data).tobytes())
    return digest.hexdigest()


def _checksums(f: h5py.File) -> dict[str, str]:
    """Digest of every array outside the stimuli group, of the file's attributes (how it is scored, e.g. its
    target filter), and the stimuli's own content digest."""
    out = {"attributes": _attributes_digest(f)}

    def visit(name, node):
        if isinstance(node, h5py.Dataset) and not name.startswith("stimuli/"):
            out[name] = _node_digest(node)

    f.visititems(visit)
    if "stimuli" in f:
        out["stimuli"] = str(f["stimuli"].attrs.get("digest", ""))
    return out


def _attributes_digest(f: h5py.File) -> str:
    attrs = {k: _strings(v) if np.ndim(v) else str(v) for k, v in f.attrs.items() if k != "checksums"}
    return hashlib.sha256(json.dumps(attrs, sort_keys=True).encode()).hexdigest()


def _content_digest(checksums: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(checksums), sort_keys=True).encode()).hexdigest()[:16]


class _Verifier:
    """Compares arrays read from a file with the checksums stored in it when it was written."""

    def __init__(self, path, f: h5py.File):
        self.path = path
        self.stored = json.loads(f.attrs["checksums"]) if "checksums" in f.attrs else None
        self.checksums = dict(self.stored) if self.stored is not None else _checksums(f)
        if self.stored is not None and self.stored.get("attributes", _attributes_digest(f)) != _attributes_digest(f):
            raise NeuralDataError(f"{path}: the file's attributes (name, subjects, ROIs, target filter, ...) do not "
                                  "match the checksum stored when it was written; prepare the dataset again")

    def check(self, f: h5py.File, key: str) -> None:
        if self.stored is not None and key in self.stored and _node_digest(f[key]) != self.stored[key]:
            raise NeuralDataError(f"{self.path}: {key} does not match the checksum stored when the file was "
                                  "written (the file was changed since); prepare the dataset again")

    def check_stimuli(self, stimuli: StimulusSet | None) -> None:
        expected = (self.stored or {}).get("stimuli")
        if stimuli is not None and expected and stimuli.content_digest() != expected:
            raise NeuralDataError(f"{self.path}: the stimulus images differ from those the file was written "
                                  f"with ({stimuli!r}); prepare the dataset again")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(ds: NeuralDataset, path, *, embed_stimuli: bool = False, validate_first: bool = True) -> pathlib.Path:
    """Writes `ds` to `path` atomically (temporary file in the same folder, then os.replace).

    embed_stimuli=True copies the images into the file; otherwise the stimulus source is referenced by path.
    """
    path = pathlib.Path(path)
    if validate_first:
        ds.validate(f"{path} (before writing)")
    stimuli_digest = ds.stimuli.content_digest() if ds.stimuli is not None else ""
    with store.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _write(ds, f, embed_stimuli, stimuli_digest)
    return path


def _strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


class _LazyResponses(Mapping):
    """Responses read from the file on access (for datasets too large to hold in memory)."""

    def __init__(self, path: str, keys, verifier: _Verifier):
        self._path, self._keys, self._verifier = path, list(keys), verifier

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        split, subject, roi = key
        name = f"{split}/neural_data/{subject}/{roi}"
        with h5py.File(self._path, "r") as f:
            self._verifier.check(f, name)
            return f[name][()]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def _read_split_ids(f: h5py.File, path: pathlib.Path, split: str, verifier: "_Verifier"):
    """The stimulus ids of `split`: one array, or one per subject."""
    key = f"{split}/stimulus_ids"
    if key not in f:
        raise NeuralDataError(f"{_where(path, split)}: missing dataset {key!r}")
    node = f[key]
    for member in ([f"{key}/{s}" for s in node] if isinstance(node, h5py.Group) else [key]):
        verifier.check(f, member)
    if isinstance(node, h5py.Group):
        return {s: np.asarray(_strings(node[s][()])) for s in node}
    return np.asarray(_strings(node[()]))


def _required(f: h5py.File, key: str, where: str) -> h5py.Dataset:
    if key not in f:
        raise NeuralDataError(f"{where}: missing dataset {key!r}")
    return f[key]


def _read_responses(f, path, splits, subjects, rois, verifier, read: bool) -> dict:
    """Every response array, checked against its checksum (with read=False: only that each one exists)."""
    responses = {}
    for split in splits:
        for subject in subjects:
            for roi in rois:
                key = f"{split}/neural_data/{subject}/{roi}"
                node = _required(f, key, _where(path, split, subject, roi))
                if read:
                    verifier.check(f, key)
                    responses[(split, subject, roi)] = node[()]
    return responses


def _read_ceilings(f, path, subjects, rois, verifier) -> dict:
    ceilings = {}
    for subject in subjects:
        for roi in rois:
            key = f"noise_ceilings/{subject}/{roi}"
            node = _required(f, key, _where(path, None, subject, roi))
            verifier.check(f, key)
            ceilings[(subject, roi)] = node[()]
    return ceilings


def load(path, *, lazy: bool = False, validate: bool = True, verify: bool = False) -> NeuralDataset:
    """Reads a dataset file written by `save` (or by the reference code's layout).

    lazy=True reads response arrays only when accessed. validate=True checks the whole contract and raises
    NeuralDataError naming the file, split, subject, ROI and fault. Every array read is compared with the
    checksum stored at writing; verify=True also re-reads every stimulus image and compares their digest.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"neural dataset file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise NeuralDataError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        verifier = _Verifier(path, f)
        for attr in ("subjects", "rois", "splits"):
            if attr not in f.attrs:
                raise NeuralDataError(f"{path}: missing attribute {attr!r}")
        subjects, rois, splits = (_strings(f.attrs[a]) for a in ("subjects", "rois", "splits"))
        modality = str(f.attrs.get("modality", ""))
        name = str(f.attrs.get("name", path.stem))
        max_nc = float(f.attrs.get("max_nc", MAX_NC))
        target_filter = f.attrs.get("target_filter")
        target_filter = None if target_filter is None else _strings(target_filter)[0]
        stimulus_ids = {split: _read_split_ids(f, path, split, verifier) for split in splits}
        responses = _read_responses(f, path, splits, subjects, rois, verifier, read=not lazy)
        ceilings = _read_ceilings(f, path, subjects, rois, verifier)
        stimuli = StimulusSet.from_hdf5(f["stimuli"]) if "stimuli" in f else None
        target_info = _read_target_info(f, verifier)
    if verify:
        verifier.check_stimuli(stimuli)
    if lazy:
        responses = _LazyResponses(str(path), [(sp, su, r) for sp in splits for su in subjects for r in rois],
                                   verifier)
    ds = NeuralDataset(name=name, modality=modality, subjects=subjects, rois=rois, splits=splits,
                       stimulus_ids=stimulus_ids, responses=responses, noise_ceilings=ceilings, stimuli=stimuli,
                       max_nc=max_nc, digest=_content_digest(verifier.checksums), target_filter=target_filter,
                       **target_info)
    if validate:
        ds.validate(str(path))
    return ds


def is_valid_file(path) -> bool:
    """True when `path` exists and loads and validates (used to skip finished work on resume)."""
    try:
        load(path, lazy=True, validate=True)
    except (OSError, NeuralDataError, KeyError, ValueError):
        return False
    return True
