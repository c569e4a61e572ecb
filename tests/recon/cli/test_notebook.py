"""``examples/mri_reconstruction.ipynb`` runs top to bottom (nbclient) on a tiny synthetic file."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[3] / "examples" / "mri_reconstruction.ipynb"


@pytest.mark.slow
def test_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # the kernel inherits the environment: a tiny file instead of the 128 x 128, 8-coil default
    for key, value in {"SIZE": "32", "COILS": "2", "SLICES": "2", "DIR": str(tmp_path)}.items():
        monkeypatch.setenv(f"RECON_NB_{key}", value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()

    text = "\n".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "(2, 2, 32, 32)" in text  # the tiny file was used
    table = text[text.index("method") :]
    for name in ("zero-filled", "cs"):
        assert name in table
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the mask and the comparison
    assert list(tmp_path.glob("data/*.h5"))  # data written where asked, not into the repository
