"""Runs one jaxbrain experiment from an ml_collections config.

  python -m jaxbrain.launch --config configs/NAME.py[:key=val,...] [--config.a.b=value] --workdir DIR

The config names its experiment (`config.experiment`); the launcher resolves it to
`jaxbrain.experiments.<experiment>.run(config, workdir)`, writes the resolved config to `DIR/config.json` and the
log to `DIR/log.txt`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import pathlib
import pkgutil
import sys

import ml_collections

from jaxbrain import experiments as experiments_pkg
from jaxbrain import results


class LaunchError(Exception):
    """A problem with what the user asked for, reported as one line without a traceback."""


def experiment_names() -> list[str]:
    """Names of the experiment modules under jaxbrain/experiments."""
    return sorted(m.name for m in pkgutil.iter_modules(experiments_pkg.__path__) if not m.name.startswith("_"))


def _experiment_list() -> str:
    lines = ["experiments:"]
    for name in experiment_names():
        try:
            module = importlib.import_module(f"jaxbrain.experiments.{name}")
            summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        except Exception as err:  # a broken experiment must not hide the others from --help
            summary = f"(cannot import: {err})"
        lines.append(f"  {name:14s} {summary}")
    return "\n".join(lines)


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Calls `get_config(arg)` of the config file in "path[:arg]"; its repository root becomes importable."""
    path_text, _, arg = spec.partition(":")
    path = pathlib.Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise LaunchError(f"config file not found: {path}")
    root = str(path.parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    module_spec = importlib.util.spec_from_file_location(f"_jaxbrain_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        raise LaunchError(f"cannot load config {path}: {type(err).__name__}: {err}") from err
    if not hasattr(module, "get_config"):
        raise LaunchError(f"config {path} has no get_config(arg) function")
    try:
        return module.get_config(arg or None)
    except (ValueError, TypeError, KeyError) as err:
        raise LaunchError(f"config {path}: {err}") from err


def _cast_like(current, text: str, key: str):
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise LaunchError(f"--config.{key}={text!r}: expected true or false")
    if isinstance(current, (int, float)):
        try:
            return type(current)(text)
        except ValueError:
            raise LaunchError(f"--config.{key}={text!r}: expected {type(current).__name__}") from None
    if isinstance(current, tuple):
        return tuple(_cast_like(current[0], t, key) if current else t for t in text.split(",") if t)
    if isinstance(current, (str, type(None))):
        return text
    raise LaunchError(f"--config.{key}: cannot set a {type(current).__name__} from the command line")


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets `config.<key>` (dotted) from text, cast to the type of the value it replaces."""
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            where = ".".join(parents[:depth]) or "the config"
            raise LaunchError(f"unknown config key {key!r}: no {part!r} in {where}")
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
        raise LaunchError(f"unknown config key {key!r}; known keys here: {known}")
    with node.unlocked():
        node[leaf] = _cast_like(node[leaf], text, key)


def resolve_experiment(config):
    """The experiment module named by `config.experiment`."""
    name = config.get("experiment")
    if not name:
        raise LaunchError("the config has no `experiment` field; known experiments: " + ", ".join(experiment_names()))
    if name not in experiment_names():
        raise LaunchError(f"unknown experiment {name!r}; known experiments: " + ", ".join(experiment_names()))
    return importlib.import_module(f"jaxbrain.experiments.{name}")


def _setup_logging(workdir: pathlib.Path) -> None:
    handler = logging.FileHandler(workdir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def launch(config, workdir: str | pathlib.Path):
    """Runs the experiment of `config` in `workdir`; the programmatic entry used by the CLI and notebooks."""
    experiment = resolve_experiment(config)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _setup_logging(workdir)
    results.write_json(workdir / "config.json", config.to_dict())
    return experiment.run(config, workdir)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxbrain.launch", description=__doc__.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="python -m jaxbrain.launch --config configs/NAME.py[:key=val,...] [--config.a.b=value] --workdir DIR",
        epilog=_experiment_list())
    parser.add_argument("--config", required=True, help="config file, optionally with :key=val,... arguments")
    parser.add_argument("--workdir", required=True, help="directory for results, plots, logs, resumable state")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    overrides = [a for a in argv if a.startswith("--config.")]
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    try:
        config = load_config(args.config)
        for item in overrides:
            key, sep, text = item[len("--config."):].partition("=")
            if not sep:
                raise LaunchError(f"{item}: expected --config.key=value")
            apply_override(config, key, text)
        launch(config, args.workdir)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, KeyError) as err:
        logging.getLogger(__name__).exception("run failed")
        print(f"error: {err}\n(traceback in {pathlib.Path(args.workdir) / 'log.txt'})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
