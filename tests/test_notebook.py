"""examples/quickstart.ipynb runs as shipped, offline, with tiny models (nbclient, a real kernel)."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARPIT_TINY", "1")
    monkeypatch.setenv("SHARPIT_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("SHARPIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = tmp_path / "outputs"
    assert (outputs / "chair" / "mesh.glb").is_file() and (outputs / "golden_chair" / "metadata.json").is_file()
    assert (outputs / "sharpit-3d-pipeline" / "model_index.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["cache", "outputs"]      # nothing else left behind
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
