"""Shared helpers for configs: typed `key=value` arguments (`--config configs/x.py:key=val,key2=val2`)."""

from __future__ import annotations

import ml_collections

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _cast(key: str, text: str, default):
    if isinstance(default, bool):
        low = text.lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError(f"config argument {key}={text!r}: expected a boolean (true/false)")
    if default is None or isinstance(default, str):
        return text
    for kind in (int, float):
        if isinstance(default, kind):
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"config argument {key}={text!r}: expected {kind.__name__}") from None
    if isinstance(default, (tuple, list)):
        items = [t for t in text.replace("+", " ").split() if t]
        proto = default[0] if default else ""
        return tuple(_cast(key, t, proto) for t in items)
    raise ValueError(f"config argument {key}: unsupported type {type(default).__name__}")


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Returns `defaults` updated from "k=v,k2=v2", each value cast to its default's type.

    Tuples are written with '+' between items (`layers=a+b+c`). Unknown keys are an error naming the known ones.
    """
    parsed = ml_collections.ConfigDict(defaults)
    if not arg:
        return parsed
    for item in arg.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"config argument {item!r}: expected key=value")
        key, text = (s.strip() for s in item.split("=", 1))
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {', '.join(sorted(defaults))}")
        parsed[key] = _cast(key, text, defaults[key])
    return parsed
