"""Every command of the user guide is checked: launch commands resolve their config with its arguments and
overrides (`--check`), launch scripts print their dry runs, and the test named above each block exists."""

import pathlib
import re
import shlex
import subprocess

import pytest

from jaxbrain import launch

ROOT = pathlib.Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"
BLOCK = re.compile(r"<!-- test: (?P<test>\S+)[^>]*-->\n```bash\n(?P<body>.*?)```", re.S)


def _blocks():
    text = GUIDE.read_text()
    blocks = [(m["test"], [line for line in m["body"].splitlines() if line.strip()]) for m in BLOCK.finditer(text)]
    assert len(blocks) == text.count("```bash") - 1  # every block but the install one names its test
    return blocks


def _commands(prefix: str):
    return [(test, line) for test, lines in _blocks() for line in lines if line.startswith(prefix)]


@pytest.mark.parametrize("test", sorted({test for test, _ in _blocks()}))
def test_the_named_test_exists(test):
    path, _, name = test.partition("::")
    assert re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), test


@pytest.mark.parametrize("command", [c for _, c in _commands("python -m jaxbrain.launch")])
def test_launch_command_resolves(command, tmp_path, capsys):
    argv = shlex.split(command)[3:]
    workdir = tmp_path / "workdir"
    argv[argv.index("--workdir") + 1] = str(workdir)
    assert launch.main([*argv, "--check"]) == 0, capsys.readouterr().err
    assert not workdir.exists()  # --check writes nothing


@pytest.mark.parametrize("command", [c for _, c in _commands("launch/")])
def test_launch_script_dry_run(command):
    words = shlex.split(command)
    done = subprocess.run(["bash", words[0], "--dry-run", *words[1:]], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "jaxbrain.launch" in done.stdout
