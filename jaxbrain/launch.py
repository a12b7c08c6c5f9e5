"""Runs one jaxbrain experiment from an ml_collections config.

  python -m jaxbrain.launch --config configs/NAME.py[:key=val,...] [--config.a.b=value] --workdir DIR

The config names its experiment (`config.experiment`); the launcher resolves it to
`jaxbrain.experiments.<experiment>.run(config, workdir)`, writes the resolved config to `DIR/config.json` and the
log to `DIR/log.txt`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import importlib.util
import logging
import os
import pathlib
import pkgutil
import sys
import traceback

import ml_collections

from jaxbrain import config_values, results, sharding
from jaxbrain import experiments as experiments_pkg
from jaxbrain.features import store


REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


class LaunchError(Exception):
    """A problem with what the user asked for, reported as one line without a traceback."""


# Faults of the input or the environment: one `error:` line, exit code 2 (the traceback goes to log.txt).
USER_ERRORS = (LaunchError, ValueError, KeyError, OSError)


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
    path = pathlib.Path(path_text).expanduser()
    if not path.is_file() and not path.is_absolute() and (REPOSITORY / path).is_file():
        path = REPOSITORY / path  # `configs/x.py` from any working directory (a notebook in colabs/, say)
    path = path.resolve()
    if not path.is_file():
        raise LaunchError(f"config file not found: {path}")
    package = next((folder for folder in path.parents if folder.name == "configs"), path.parent)
    root = str(package.parent)  # configs/paper/x.py imports configs.common too
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


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets `config.<key>` (dotted) from text, cast to the type of the value it replaces (config_values)."""
    try:
        config_values.apply_override(config, key, text)
    except config_values.ConfigValueError as err:
        raise LaunchError(str(err)) from None


def resolve_experiment(config):
    """The experiment module named by `config.experiment`."""
    name = config.get("experiment")
    if not name:
        raise LaunchError("the config has no `experiment` field; known experiments: " + ", ".join(experiment_names()))
    if name not in experiment_names():
        raise LaunchError(f"unknown experiment {name!r}; known experiments: " + ", ".join(experiment_names()))
    return importlib.import_module(f"jaxbrain.experiments.{name}")


@contextlib.contextmanager
def _logging_into(workdir: pathlib.Path):
    """For the run: INFO and above into workdir/log.txt, warnings on stderr; the root logger is restored after.

    Only these two handlers are attached to the root logger while the run lasts: handlers that libraries
    attached on import (grain adds a stderr one) are set aside, so messages are not printed twice.
    """
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    to_file = logging.FileHandler(workdir / "log.txt")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_console = logging.StreamHandler(sys.stderr)
    to_console.setLevel(logging.WARNING)
    to_console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.handlers[:] = [to_file, to_console]
    root.setLevel(logging.INFO)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU backend" is not news on a CPU
    try:
        yield
    finally:
        to_file.close()
        root.handlers[:], root.level = saved


def _prepare_workdir(workdir: pathlib.Path) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise LaunchError(f"workdir {workdir} is a file, not a folder")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise LaunchError(f"cannot write into workdir {workdir}: {err.strerror or err}") from None


def launch(config, workdir: str | pathlib.Path):
    """Runs the experiment of `config` in `workdir`; the programmatic entry used by the CLI and notebooks.

    The resolved config is written to workdir/config.json when the run has finished, so it always describes
    the run whose summary is there (every unit of work also keeps the config that made it).
    """
    experiment = resolve_experiment(config)
    workdir = pathlib.Path(workdir)
    _prepare_workdir(workdir)
    store.remove_stale_temporaries(workdir)
    with _logging_into(workdir):
        try:
            summary = experiment.run(config, workdir)
        except Exception:  # the traceback goes to log.txt only; the console gets the one-line error
            logging.getLogger(__name__).info("run failed", exc_info=True)
            raise
    if sharding.is_writer():
        results.write_json(workdir / "config.json", config.to_dict())
    return summary


def _describe(err: BaseException) -> str:
    """One line for a user or environment fault."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"no space left on the device while writing {err.filename or 'into the workdir'}; free space and " \
               "rerun the same command to resume"
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    if isinstance(err, KeyError) and len(err.args) == 1:
        return str(err.args[0])
    return str(err)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxbrain.launch", description=__doc__.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="python -m jaxbrain.launch --config configs/NAME.py[:key=val,...] [--config.a.b=value] --workdir DIR",
        epilog=_experiment_list())
    parser.add_argument("--config", required=True, help="config file, optionally with :key=val,... arguments")
    parser.add_argument("--workdir", required=True, help="directory for results, plots, logs, resumable state")
    parser.add_argument("--verify", action="store_true",
                        help="re-read and check every stored checksum (dataset arrays and stimulus images)")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    parser.add_argument("--check", action="store_true",
                        help="print the resolved config and exit without running (checks arguments and overrides)")
    group = parser.add_argument_group("several processes (one jax.distributed run; see launch/)")
    group.add_argument("--multihost", action="store_true",
                       help="jax.distributed.initialize() from the cluster's environment (TPU pod, SLURM)")
    group.add_argument("--coordinator", help="host:port of process 0 (with --num-processes and --process-id)")
    group.add_argument("--num-processes", type=int)
    group.add_argument("--process-id", type=int)
    return parser


def initialise_processes(args) -> None:
    """Joins a jax.distributed run when the command line asks for one; CPU processes talk through gloo."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
        raise LaunchError("--coordinator, --num-processes and --process-id go together")
    if not (args.multihost or args.coordinator):
        return
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used only by CPU devices
    kwargs = {} if args.multihost else dict(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                            process_id=args.process_id)
    jax.distributed.initialize(**kwargs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    overrides = [a for a in argv if a.startswith("--config.")]
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    try:
        initialise_processes(args)
        config = load_config(args.config)
        for item in overrides:
            key, sep, text = item[len("--config."):].partition("=")
            if not sep:
                raise LaunchError(f"{item}: expected --config.key=value")
            apply_override(config, key, text)
        if args.verify:
            with config.unlocked():
                config.verify = True
        if args.check:
            print(config.to_json_best_effort(indent=1, sort_keys=True))
            return 0
        launch(config, args.workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_describe(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    status = main()
    if status == 130:
        # Threads of the interrupted run (image decoding, checkpoint writers) may still hold native resources;
        # leave without the interpreter's teardown, which can crash on them after the message is out.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
