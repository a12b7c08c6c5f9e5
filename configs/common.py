"""Shared helpers for configs: typed `key=value` arguments (`--config configs/x.py:key=val,key2=val2`).

The parser is `jaxbrain.config_values`, the same one that casts `--config.a.b=value` overrides.
"""

from jaxbrain.config_values import Declared, parse_arg

__all__ = ["Declared", "parse_arg"]
