"""Every notebook in colabs/ runs top to bottom in its small mode, from a working directory outside the checkout.

The test puts a cell after each notebook's `parameters` cell that sets SMALL = True, a workdir under tmp_path and
the local data folder; nothing else of the notebook changes.
"""

import json
import pathlib

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))


def _small(notebook: nbformat.NotebookNode, workdir: pathlib.Path, data: pathlib.Path) -> nbformat.NotebookNode:
    (index,) = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    values = f"SMALL = True\nWORKDIR = {str(workdir)!r}\nDATA = {str(data)!r}"
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(values))
    return notebook


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_small_mode(path, tmp_path, realdata, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.chdir(tmp_path)
    notebook = _small(nbformat.read(path, as_version=4), tmp_path / "work", realdata)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   ).execute()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path):
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells if c["cell_type"] == "code")
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all("".join(c["source"]).startswith("#@title") for c in code)
    assert "google.colab" in "".join(code[0]["source"])  # the first cell installs on Colab
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1
    assert not any("def " in "".join(c["source"]) or "class " in "".join(c["source"]) for c in code)
