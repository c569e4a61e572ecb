"""The package without Triton: import, every model family's forward and backward on the CPU, and clear errors.

Each check runs in a fresh interpreter, because the test session itself has imported Triton (it runs the kernels
under ``TRITON_INTERPRET=1``) and import side effects cannot be undone in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Blocks ``import triton`` (and its submodules) the way a machine without the package would: a meta-path finder
# that raises ModuleNotFoundError before any other finder can locate the installed copy.
BLOCK_TRITON = """
import importlib.abc, sys

class _NoTriton(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _NoTriton())
"""

# Builds the smallest registered size of every family through timm, runs forward and backward on the CPU and
# reports what the process imported.
RUN_MODELS = """
import json, sys
import timm, torch
import recvision
from recvision import config

torch.set_num_threads(1)
families = ("vir", "lightnet", "plstm")
report = {"models": {}}
for family in families:
    name = f"{family}_femto"
    assert name in timm.list_models(f"{family}_*"), name
    model = timm.create_model(name, num_classes=3)
    x = torch.randn(2, *model.pretrained_cfg["input_size"])
    out = model(x)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    report["models"][name] = {
        "shape": list(out.shape),
        "finite": bool(torch.isfinite(out).all()),
        "all_grads": all(g is not None and bool(torch.isfinite(g).all()) for g in grads),
    }
try:
    config.set_backend("triton")
    report["set_backend"] = None
except RuntimeError as error:
    report["set_backend"] = str(error)
report["backend_after"] = config.get_backend()
report["triton_imported"] = "triton" in sys.modules and sys.modules["triton"] is not None
report["kernel_modules"] = sorted(
    name for name in sys.modules
    if name.startswith("recvision") and ("triton" in name or name.startswith("recvision.ops.common."))
)
report["mri_imported"] = sorted(
    name for name in ("monai", "h5py", "skimage", "sklearn", "matplotlib", "recon") if name in sys.modules
)
print("REPORT" + json.dumps(report))
"""


def _run(code: str, extra_env: dict[str, str] | None = None) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("TRITON_INTERPRET", "RECVISION_BACKEND")}
    env.update({"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(extra_env or {})})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("REPORT"))
    return json.loads(line[len("REPORT") :])


def _check_models(report: dict) -> None:
    assert set(report["models"]) == {"vir_femto", "lightnet_femto", "plstm_femto"}
    for name, result in report["models"].items():
        assert result == {"shape": [2, 3], "finite": True, "all_grads": True}, name


@pytest.mark.slow
def test_models_train_with_triton_blocked() -> None:
    """With ``import triton`` failing: import, create, forward, backward work, and the Triton backend is refused."""
    report = _run(BLOCK_TRITON + RUN_MODELS)
    _check_models(report)
    assert not report["triton_imported"] and report["kernel_modules"] == []
    message = report["set_backend"]
    assert message is not None and "\n" not in message
    assert "triton package" in message and "set_backend('auto')" in message
    assert report["backend_after"] == "auto"


@pytest.mark.slow
def test_cpu_use_never_imports_triton() -> None:
    """With Triton installed, CPU use imports none of recvision's kernel modules (torch itself may import Triton),
    nor the MRI stack; without a GPU or the interpreter the Triton backend is refused with one line naming both ways
    out."""
    pytest.importorskip("triton")
    report = _run(RUN_MODELS)
    _check_models(report)
    assert report["kernel_modules"] == []
    assert report["mri_imported"] == []
    message = report["set_backend"]
    assert message is not None and "\n" not in message
    assert "CUDA GPU" in message and "TRITON_INTERPRET=1" in message and "0 active drivers" not in message


def test_import_does_not_import_mri_or_triton() -> None:
    """``import recvision`` alone pulls in neither its Triton kernel modules nor ``recon``'s dependencies."""
    code = """
    import json, sys
    import recvision
    heavy = ("monai", "h5py", "skimage", "sklearn", "matplotlib", "recon", "nibabel")
    loaded = [name for name in heavy if name in sys.modules]
    loaded += [name for name in sys.modules if name.startswith("recvision") and "triton" in name]
    loaded += [name for name in sys.modules if name.startswith("recvision.ops.common.")]
    print("REPORT" + json.dumps(sorted(loaded)))
    """
    assert _run(code) == []


def test_ops_package_lists_every_op() -> None:
    """``recvision.ops`` exposes every op folder, without importing a kernel module."""
    code = """
    import json, sys
    import recvision.ops as ops
    kernels = [name for name in sys.modules if name.startswith("recvision") and "triton" in name]
    print("REPORT" + json.dumps([sorted(ops.__all__), all(hasattr(ops, name) for name in ops.__all__), kernels]))
    """
    assert _run(code) == [["additive", "md_lrpe", "md_tpe", "plstm2d", "retention"], True, []]


def test_set_backend_triton_message_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: with no GPU and no interpreter, both the global switch and a per-call override give the line."""
    import torch

    from recvision import config
    from recvision.ops.retention import chunk_retention

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    previous = config.get_backend()
    with pytest.raises(RuntimeError, match="needs a CUDA GPU") as error:
        config.set_backend("triton")
    assert "\n" not in str(error.value)
    assert config.get_backend() == previous
    q = torch.randn(1, 4, 1, 8)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        chunk_retention(q, q, q, backend="triton")
    monkeypatch.setattr(config, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="triton package"):
        config.set_backend("triton")
