"""One value parser for `get_config(arg)` and `--config.x=` overrides: '+' tuples, typed None defaults."""

from typing import Sequence

import ml_collections
import pytest
from ml_collections.config_dict import placeholder

from jaxbrain.config_values import ConfigValueError, Declared, apply_override, parse_arg, parse_value


def test_both_paths_read_tuples_the_same_way():
    args = parse_arg("layers=a+b+c,ids=1+2", layers=("",), ids=(0,))
    config = ml_collections.ConfigDict({"layers": ("",), "ids": (0,)})
    apply_override(config, "layers", "a+b+c")
    apply_override(config, "ids", "1+2")
    assert args.layers == config.layers == ("a", "b", "c")
    assert args.ids == config.ids == (1, 2)


def test_none_defaults_take_their_declared_type():
    args = parse_arg("subjects=1+2,limit=3", subjects=Declared(Sequence[int]), limit=Declared(int | None),
                     name=Declared(str))
    assert args.subjects == (1, 2) and args.limit == 3 and args.name is None
    config = ml_collections.ConfigDict({"limit": placeholder(int), "window": placeholder(float)})
    apply_override(config, "window", "none")
    assert config.window is None
    apply_override(config, "limit", "7")
    apply_override(config, "window", "0.5")
    assert config.limit == 7 and config.window == 0.5


@pytest.mark.parametrize("text, like, message", [
    ("x", 0, "'x': expected int"), ("maybe", False, "'maybe': expected a boolean"),
    ("1.5.2", 0.0, "'1.5.2': expected float"), ("1+x", (0,), "'x': expected int"),
])
def test_bad_values_name_the_field(text, like, message):
    with pytest.raises(ConfigValueError, match=f"--config.k={message}"):
        parse_value("--config.k", text, like)


def test_unknown_keys_and_groups_are_errors():
    config = ml_collections.ConfigDict({"ridge": {"alphas": (1.0,)}})
    with pytest.raises(ConfigValueError, match="unknown config key 'ridge.nokey'"):
        apply_override(config, "ridge.nokey", "1")
    with pytest.raises(ConfigValueError, match="is a group of settings"):
        apply_override(config, "ridge", "1")
    with pytest.raises(ConfigValueError, match="unknown config argument 'bogus'"):
        parse_arg("bogus=1", seed=0)
