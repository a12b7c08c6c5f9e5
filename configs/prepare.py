"""Converts a public dataset release into a validated NeuralDataset file.

  python -m jaxbrain.launch --config configs/prepare.py:dataset=<name> --config.source_dir=<release folder> \
      --workdir runs/data

writes `runs/data/<name>.h5` (see docs/datasets.md for each dataset's files). The reader's keyword arguments
are config arguments too, e.g. `configs/prepare.py:dataset=nsd,subjects=1+2` or `--config.options.subjects=1+2`
(tuples are written with '+'); `embed_stimuli=true` copies the images into the file; `overwrite=true` redoes a
finished dataset.
"""

import importlib
import inspect

import ml_collections

from configs.common import parse_arg
from jaxbrain.data import sources

_SIMPLE = (bool, int, float, str, tuple, type(None))
_FIELDS = ("dataset", "source_dir", "embed_stimuli", "overwrite")


def _dataset_of(arg: str | None) -> str:
    for item in (arg or "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == "dataset":
            return value.strip()
    return "cowley2023"


def _reader_parameters(dataset: str) -> dict[str, inspect.Parameter]:
    """The reader's parameters after the first (the source folder)."""
    try:
        reader = sources.get_reader(dataset)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    module, _, function = reader.target.rpartition(".")
    target = getattr(importlib.import_module(module), function)
    return dict(list(inspect.signature(target).parameters.items())[1:])


def reader_options(dataset: str) -> dict:
    """Keyword arguments (with simple defaults) of the dataset's reader, as config defaults."""
    return {name: p.default for name, p in _reader_parameters(dataset).items()
            if p.default is not inspect.Parameter.empty and isinstance(p.default, _SIMPLE)
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _sequence_if_annotated(value, parameter: inspect.Parameter):
    """`k=v` text for an option whose default is None but whose annotation is a sequence -> tuple of str."""
    annotation = str(parameter.annotation)
    if isinstance(value, str) and any(t in annotation for t in ("Sequence", "tuple", "list")):
        return tuple(v for v in value.split("+") if v)
    return value


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    dataset = _dataset_of(arg)
    parameters = _reader_parameters(dataset)
    options = reader_options(dataset)
    clash = set(_FIELDS) & set(options)
    if clash:
        raise ValueError(f"reader of {dataset!r} has options named like config fields: {sorted(clash)}")
    args = parse_arg(arg, dataset=dataset, source_dir="", embed_stimuli=False, overwrite=False, **options)
    config = ml_collections.ConfigDict()
    config.experiment = "prepare"
    config.dataset = args.dataset
    config.source_dir = args.source_dir
    config.embed_stimuli = args.embed_stimuli
    config.overwrite = args.overwrite
    config.options = ml_collections.ConfigDict(
        {k: _sequence_if_annotated(args[k], parameters[k]) if options[k] is None else args[k] for k in options})
    config.lock()
    return config
