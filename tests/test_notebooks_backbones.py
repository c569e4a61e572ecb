"""The example notebooks run from top to bottom on tiny settings (``RECVISION_NOTEBOOK_QUICK=1``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # the kernel inherits the environment: quick settings, one thread (its matplotlib backend is inline)
    monkeypatch.setenv("RECVISION_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return notebook


def _text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _has_figure(notebook) -> bool:
    return any("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_backbones_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = _execute("backbones_quickstart.ipynb", tmp_path, monkeypatch)
    text = _text(notebook)
    assert "vir_femto: logits (1, 10)" in text and "lightnet_femto: logits (1, 10)" in text
    for mode in ("parallel", "chunkwise", "recurrent"):
        assert f"{mode}: max |logits - parallel|" in text
    assert "vir: channels [64, 64, 64], reductions [8, 8, 8], shapes [(1, 64, 8, 8)" in text
    assert "128x128 px = 256 tokens" in text and "peak memory" in text
    assert _has_figure(notebook)


@pytest.mark.slow
def test_finetune_digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = _execute("finetune_digits.ipynb", tmp_path, monkeypatch)
    text = _text(notebook)
    assert "lightnet_femto" in text and "| split |" in text and "acc[9]" in text
    assert _has_figure(notebook)
    assert os.listdir(tmp_path) == []  # no checkpoints or other files written
