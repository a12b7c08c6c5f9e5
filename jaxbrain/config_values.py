"""Typed values from command-line text: one parser for `configs/x.py:key=val,...` and `--config.a.b=val`.

A value is cast to the type of the value it replaces: booleans accept true/false (also yes/no, on/off, 1/0),
numbers must parse as their type, tuples are written with '+' between items (`layers=a+b+c`; the comma already
separates `key=value` pairs) and each item is cast like the tuple's first item. A field whose default is None
declares its type instead: `Declared(int)`, `Declared(tuple[int, ...])` in `parse_arg`, or ml_collections'
`placeholder(int)` in a ConfigDict; `none` sets such a field back to None. Errors are one line naming the key.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from typing import Any

import ml_collections

TUPLE_SEPARATOR = "+"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigValueError(ValueError):
    """A command-line value that does not fit its field."""


@dataclasses.dataclass(frozen=True)
class Declared:
    """A `parse_arg` default whose value is None (or given) but whose type is known, e.g. tuple[int, ...]."""

    kind: Any
    default: Any = None


def _strip_optional(kind):
    """`int | None` -> int; of several alternatives a sequence wins (`Sequence[str] | str` -> Sequence[str])."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return next((a for a in inner if _is_sequence(a)), inner[0])
    return kind


def _item_kind(kind, like) -> Any:
    """The type of each item of a tuple field: from `tuple[int, ...]`-style declarations, else the first item."""
    args = [a for a in typing.get_args(kind) if a is not Ellipsis]
    if args:
        return _strip_optional(args[0])
    return type(like[0]) if like else str


def _is_sequence(kind) -> bool:
    return (typing.get_origin(kind) or kind) in (tuple, list, collections.abc.Sequence)


def base_type(kind) -> type:
    """The plain type a declared type stands for on the command line: bool, int, float, str or tuple."""
    kind = _strip_optional(kind)
    if _is_sequence(kind):
        return tuple
    return kind if kind in (bool, int, float, str) else str


def parse_value(label: str, text: str, like: Any = None, declared: Any = None) -> Any:
    """`text` as a value of the type of `like` (the value it replaces) or of `declared` when `like` is None.

    `label` names the field in errors, e.g. "config argument seed" or "--config.batch_size".
    """
    kind = _strip_optional(declared) if like is None and declared is not None else type(like)
    if like is None and text.strip().lower() == "none":
        return None
    if kind is bool:
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ConfigValueError(f"{label}={text!r}: expected a boolean (true/false)")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ConfigValueError(f"{label}={text!r}: expected {kind.__name__}") from None
    if kind in (str, type(None)):
        return text
    if _is_sequence(kind):
        item = _item_kind(kind, like)
        parts = [t.strip() for t in text.split(TUPLE_SEPARATOR) if t.strip()]
        return tuple(parse_value(label, t, None, item) if item is not str else t for t in parts)
    raise ConfigValueError(f"{label}: cannot set a {getattr(kind, '__name__', kind)} from the command line")


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """`defaults` updated from "k=v,k2=v2", each value cast to its default's (or `Declared`) type.

    Unknown keys are an error naming the known ones.
    """
    declared = {k: v.kind for k, v in defaults.items() if isinstance(v, Declared)}
    parsed = ml_collections.ConfigDict({k: v.default if isinstance(v, Declared) else v
                                        for k, v in defaults.items()})
    for item in (arg or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ConfigValueError(f"config argument {item!r}: expected key=value")
        key, text = (s.strip() for s in item.split("=", 1))
        if key not in defaults:
            raise ConfigValueError(f"unknown config argument {key!r}; known: {', '.join(sorted(defaults))}")
        value = parse_value(f"config argument {key}", text, parsed[key], declared.get(key))
        with parsed.ignore_type():
            parsed[key] = value
    return parsed


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets `config.<key>` (dotted) from `text`, cast to the type of the value it replaces."""
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            where = ".".join(parents[:depth]) or "the config"
            raise ConfigValueError(f"unknown config key {key!r}: no {part!r} in {where}")
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
        raise ConfigValueError(f"unknown config key {key!r}; known keys here: {known}")
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigValueError(f"--config.{key} is a group of settings; set one of: {', '.join(sorted(current))}")
    declared = node.get_type(leaf) if current is None else None
    value = parse_value(f"--config.{key}", text, current, declared)
    with node.unlocked(), node.ignore_type():
        node[leaf] = value
