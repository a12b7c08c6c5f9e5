"""Shared helpers for configs: typed `key=value` arguments (`--config configs/x.py:key=val,key2=val2`).

The parser is `jaxbrain.config_values`, the same one that casts `--config.a.b=value` overrides.
"""

import re

from jaxbrain.config_values import Declared, parse_arg

__all__ = ["Declared", "model_label", "parse_arg"]


def model_label(name: str) -> str:
    """A registry name as a label for results and config keys (flex names hold ':' and '.')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)
