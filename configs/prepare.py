"""Converts a public dataset release into a validated NeuralDataset file.

  python -m jaxbrain.launch --config configs/prepare.py:dataset=<name> --config.source_dir=<release folder> \
      --workdir runs/data

writes `runs/data/<name>.h5` (see docs/datasets.md for each dataset's files). The reader's keyword arguments
are config arguments too, e.g. `configs/prepare.py:dataset=nsd,subjects=1+2` or `--config.options.subjects=1+2`
(tuples are written with '+'); `embed_stimuli=true` copies the images into the file; `overwrite=true` redoes a
finished dataset.
"""

import inspect
import typing

import ml_collections
from ml_collections.config_dict import placeholder

from configs.common import Declared, parse_arg
from jaxbrain.config_values import base_type
from jaxbrain.data.prepare import reader_defaults

_SIMPLE = (bool, int, float, str, tuple, type(None))
_FIELDS = ("dataset", "source_dir", "embed_stimuli", "overwrite")


def _reader_parameters(dataset: str) -> dict[str, inspect.Parameter]:
    try:
        return reader_defaults(dataset)
    except KeyError as err:
        raise ValueError(err.args[0]) from None


def _dataset_of(arg: str | None) -> str:
    for item in (arg or "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == "dataset":
            return value.strip()
    return "cowley2023"


def _annotation(parameter: inspect.Parameter):
    """The parameter's annotation as a type (the readers' modules use postponed, string annotations)."""
    annotation = parameter.annotation
    if isinstance(annotation, str):
        namespace = {"Sequence": typing.Sequence, "tuple": tuple, "list": list, "int": int, "float": float,
                     "str": str, "bool": bool, "None": None}
        try:
            return eval(annotation, namespace)  # noqa: S307 - annotations of the project's own readers
        except Exception:
            return str
    return annotation


def reader_options(dataset: str) -> dict:
    """Keyword arguments (with simple defaults) of the dataset's reader, as config defaults; a None default
    carries the parameter's annotated type (`Declared`)."""
    options = {}
    for name, p in _reader_parameters(dataset).items():
        if p.default is inspect.Parameter.empty or not isinstance(p.default, _SIMPLE):
            continue
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        options[name] = Declared(_annotation(p)) if p.default is None else p.default
    return options


def _option_value(value, option):
    """A ConfigDict value for one reader option; a None that declares its type stays typed for overrides."""
    if value is None and isinstance(option, Declared):
        return placeholder(base_type(option.kind))
    return value


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    dataset = _dataset_of(arg)
    _reader_parameters(dataset)  # an unknown dataset is a clear error here
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
    config.options = ml_collections.ConfigDict({k: _option_value(args[k], options[k]) for k in options})
    config.lock()
    return config
