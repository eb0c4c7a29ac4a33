"""The notebooks run top to bottom (small settings) and are stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip the outputs"


@pytest.mark.slow  # ~25 s alone (kernel start and imports), more on a busy machine
def test_quickstart_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MTBIO_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MTBIO_NOTEBOOK_ITERS", "4")
    monkeypatch.setenv("MTBIO_NOTEBOOK_SHAPE", "8,64,64")
    monkeypatch.setenv("MTBIO_NOTEBOOK_CROP", "32")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend returns the figure as PNG
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nb = nbformat.read(REPO / "notebooks" / "01_quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    assert (tmp_path / "out" / "predictions" / "masktwins.zarr").is_dir()
    assert (tmp_path / "out" / "results.json").is_file()
    texts = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("| masktwins | 1 |" in t for t in texts)  # the evaluate workflow printed its table
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 1  # image / label / source-only / MaskTwins side by side
