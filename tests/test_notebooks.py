"""Every notebook in colabs/ runs top to bottom in its small mode, from a working directory outside the checkout.

The test puts a cell after each notebook's `parameters` cell that sets SMALL = True, a workdir under tmp_path and
the local data folder; nothing else of the notebook changes. Each kernel starts in its own folder outside the
checkout.
"""

import concurrent.futures
import json
import pathlib
import re
import time

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))


def _small(notebook: nbformat.NotebookNode, workdir: pathlib.Path, data: pathlib.Path) -> nbformat.NotebookNode:
    (index,) = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    values = f"SMALL = True\nWORKDIR = {str(workdir)!r}\nDATA = {str(data)!r}"
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(values))
    return notebook


def _execute(path: pathlib.Path, folder: pathlib.Path, data: pathlib.Path) -> float:
    from nbclient import NotebookClient

    folder.mkdir(parents=True)
    notebook = _small(nbformat.read(path, as_version=4), folder / "work", data)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}},
                   ).execute()
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def executed(tmp_path_factory, realdata):
    """Every notebook run once, two kernels at a time (most of a small run is compilation on one core)."""
    root = tmp_path_factory.mktemp("notebooks")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {path.stem: pool.submit(_execute, path, root / path.stem, realdata) for path in NOTEBOOKS}
    return {name: future.exception() or future.result() for name, future in futures.items()}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_small_mode(path, executed):
    outcome = executed[path.stem]
    if isinstance(outcome, BaseException):
        raise outcome
    print(f"{path.name}: {outcome:.1f} s")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path):
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells if c["cell_type"] == "code")
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all("".join(c["source"]).startswith("#@title") for c in code)
    assert "google.colab" in "".join(code[0]["source"])  # the first cell installs on Colab
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1
    # no library code in cells: no function or class definitions
    assert not any(re.search(r"^\s*(def|class) \w", "".join(c["source"]), re.M) for c in code)
