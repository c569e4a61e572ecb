"""Check that a refactor of the ops leaves their results bit-identical to another git revision.

``python tests/ops/compare_revisions.py REV`` extracts ``REV`` (e.g. ``main``) with ``git archive`` into a temporary
folder, runs every public op dispatcher (forward and the gradients of all inputs, on the Triton path under
``TRITON_INTERPRET=1`` or a GPU, and on the PyTorch path) in one subprocess per tree on the same random inputs, and
compares the results with ``torch.equal``. It prints one line per op and exits non-zero on the first difference. It
only uses names that exist in both trees, so it works across renames of the internal modules.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _cases() -> dict[str, tuple]:
    """``name -> (function name, module, positional inputs, keyword arguments)`` with inputs built from seed 0."""
    g = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    B, T, H, K, V = 2, 45, 3, 24, 40
    q, k, v = randn(B, T, H, K), randn(B, T, H, K), randn(B, T, H, V)
    g_gamma = torch.log1p(-torch.rand(H, generator=g) * 0.2)
    h0 = randn(B, H, K, V)
    gk = randn(B, T, H, K)
    grid = randn(2, 7, 5, 3 * 8)
    log_decay = torch.log(torch.rand(3, generator=g) * 0.5 + 0.4)
    X, Y, DK, DV = 6, 5, 16, 8
    pq, pk, pv = randn(1, X, Y, H, DK), randn(1, X, Y, H, DK), randn(1, X, Y, H, DV)
    gates = {
        name: torch.rand(1, X, Y, H, generator=g) * (1.2 if name.startswith("trans") else 1.0)
        for name in ("source_r", "source_d", "trans_rl", "trans_ru", "trans_du", "trans_dl", "mark_l", "mark_u")
    }
    gates["direct"] = torch.rand(1, X, Y, H, generator=g)
    return {
        "chunk_retention": (
            "chunk_retention",
            "recvision.ops.retention",
            (q, k, v, g_gamma),
            dict(initial_state=h0, output_final_state=True, chunk_size=16),
        ),
        "fused_recurrent_retention": (
            "fused_recurrent_retention",
            "recvision.ops.retention",
            (q, k, v, g_gamma),
            dict(initial_state=h0, output_final_state=True),
        ),
        "chunk_additive": ("chunk_additive", "recvision.ops.additive", (q, k, v, gk), dict(chunk_size=16)),
        "chunk_additive_no_key": ("chunk_additive", "recvision.ops.additive", (q, None, v, gk), dict(chunk_size=16)),
        "md_tpe": ("md_tpe", "recvision.ops.md_tpe", (grid, log_decay), dict(causal=False)),
        "md_tpe_causal": ("md_tpe", "recvision.ops.md_tpe", (grid, log_decay), dict(causal=True)),
        "plstm2d": ("plstm2d", "recvision.ops.plstm2d", (pq, pk, pv), dict(gates, chunk_size=4)),
    }


def _worker(out: str) -> None:
    """Run every case on both backends in the tree on ``sys.path[0]`` and save the results to ``out``."""
    import importlib

    results = {}
    for name, (fn_name, module, args, kwargs) in _cases().items():
        fn = getattr(importlib.import_module(module), fn_name)
        for backend in ("torch", "triton"):
            leaves = [a.clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args]
            kw = {
                key: value.clone().requires_grad_(True) if isinstance(value, torch.Tensor) else value
                for key, value in kwargs.items()
            }
            result = fn(*leaves, **kw, backend=backend)
            outputs = [t for t in (result if isinstance(result, tuple) else (result,)) if t is not None]
            loss = sum((t * torch.linspace(-1, 1, t.numel()).view_as(t)).sum() for t in outputs)
            loss.backward()
            tensors = outputs + [t.grad for t in [*leaves, *kw.values()] if isinstance(t, torch.Tensor)]
            results[f"{name}/{backend}"] = [t.detach().clone() for t in tensors]
    torch.save(results, out)


def _run_tree(tree: Path, out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(out)]
    subprocess.run(cmd, check=True, env=env, cwd=tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", nargs="?", help="git revision to compare the working tree with")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    if not args.rev:
        parser.error("give a git revision, e.g. main")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        archive = Path(tmp) / "base.tar"
        subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), args.rev], check=True, cwd=ROOT)
        with tarfile.open(archive) as tar:
            tar.extractall(base, filter="data")
        _run_tree(base, Path(tmp) / "base.pt")
        _run_tree(ROOT, Path(tmp) / "head.pt")
        before, after = torch.load(Path(tmp) / "base.pt"), torch.load(Path(tmp) / "head.pt")
    if before.keys() != after.keys():
        raise SystemExit(f"different cases: {sorted(before.keys() ^ after.keys())}")
    for key in sorted(before):
        same = len(before[key]) == len(after[key]) and all(map(torch.equal, before[key], after[key]))
        print(f"{key}: {'bit-identical' if same else 'DIFFERENT'} ({len(before[key])} tensors)")
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
