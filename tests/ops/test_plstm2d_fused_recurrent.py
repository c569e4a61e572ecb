"""Tests of the native CPU forward of the 2-D pLSTM (:func:`fused_recurrent_plstm2d`) and of its loader.

The reference is :func:`naive_plstm2d` (the recurrence in Python), run per orientation on flipped copies and summed.
Compared: the output only (the kernel has no backward), relative RMS error, in float64 (to rounding), float32 and
from bfloat16 / float16 inputs. Shapes cover a single cell, single rows and columns, value widths below, at and
above the kernel's 32-column block, several batches and heads, and every orientation alone and together.

The suite needs a C compiler; where none is found the kernel tests skip with the loader's reason, and the fallback
tests still run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest
import torch
from plstm2d_testing import random_gates

from recvision import config
from recvision.layers.plstm import PLSTM2D
from recvision.ops.plstm2d import (
    GATE_NAMES,
    fused_recurrent_available,
    fused_recurrent_plstm2d,
    naive_plstm2d,
    orient,
    unorient,
)
from recvision.ops.plstm2d.fused_recurrent import _KERNEL
from recvision.ops.utils import assert_close, native

needs_kernel = pytest.mark.skipif(fused_recurrent_available() is not None, reason=str(fused_recurrent_available()))

RATIO = {torch.float64: 1e-13, torch.float32: 2e-6}


def _close(reference: torch.Tensor, actual: torch.Tensor, ratio: float) -> None:
    """Relative RMS error at most ``ratio``, with no absolute shortcut."""
    assert_close("fused_recurrent_plstm2d", reference, actual, ratio, atol=0.0)


def _inputs(B, X, Y, H, DK, DV, O, mode="P", dtype=torch.float64, seed=0):
    """``q, k, v`` and the nine gates, each gate ``[O, B, X, Y, H]`` (one random layer per orientation)."""
    torch.manual_seed(seed)
    q, k, v = (torch.randn(B, X, Y, H, d, dtype=dtype) for d in (DK, DK, DV))
    per_o = [random_gates(mode, (B, X, Y, H), "cpu") for _ in range(O)]
    gates = {name: torch.stack([g[name] for g in per_o]).to(dtype) for name in GATE_NAMES}
    return q, k, v, gates


def _reference(q, k, v, gates, orientations):
    """Sum over orientations of the naive recurrence on flipped copies, in float64."""
    q, k, v = (t.double() for t in (q, k, v))
    total = 0
    for i, o in enumerate(orientations):
        g = {name: orient(t[i].double(), o) for name, t in gates.items()}
        total = total + unorient(naive_plstm2d(orient(q, o), orient(k, o), orient(v, o), **g), o)
    return total


@needs_kernel
@pytest.mark.parametrize("mode", ["P", "DL", "DR", "free"])
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1, 1, 4, 4), (1, 1, 6, 2, 8, 8), (2, 5, 1, 1, 3, 5), (2, 5, 7, 3, 8, 40), (1, 9, 6, 2, 16, 32)],
    ids=["1x1", "1x6", "5x1", "5x7-dv40", "9x6-dv32"],
)
def test_matches_naive_every_orientation(mode, shape):
    B, X, Y, H, DK, DV = shape
    q, k, v, gates = _inputs(B, X, Y, H, DK, DV, 4, mode)
    out = fused_recurrent_plstm2d(q, k, v, **gates, orientations=(0, 1, 2, 3))
    assert out.dtype == torch.float64 and out.shape == (B, X, Y, H, DV)
    _close(_reference(q, k, v, gates, (0, 1, 2, 3)), out, RATIO[torch.float64])
    for o in range(4):
        one = {name: t[o : o + 1] for name, t in gates.items()}
        single = fused_recurrent_plstm2d(q, k, v, **one, orientations=(o,))
        expected = _reference(q, k, v, one, (o,))
        _close(expected, single, RATIO[torch.float64])


@needs_kernel
def test_without_orientations_is_the_op_itself():
    q, k, v, gates = _inputs(2, 6, 5, 2, 8, 12, 1)
    plain = {name: t[0] for name, t in gates.items()}
    out = fused_recurrent_plstm2d(q, k, v, **plain, scale=0.3)
    _close(naive_plstm2d(q, k, v, **plain, scale=0.3), out, RATIO[torch.float64])
    # a repeated orientation is summed like any other
    twice = fused_recurrent_plstm2d(q, k, v, **{n: t.expand(2, *t.shape[1:]) for n, t in gates.items()},
                                    orientations=(0, 0), scale=0.3)  # fmt: skip
    _close(2 * out, twice, RATIO[torch.float64])


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lower_precision_inputs(dtype):
    q, k, v, gates = _inputs(2, 7, 6, 2, 16, 24, 4, dtype=dtype)
    out = fused_recurrent_plstm2d(q, k, v, **gates, orientations=(0, 1, 2, 3))
    assert out.dtype == dtype
    # computed in float32 from the rounded inputs: compare with the float64 reference on the same values
    expected = _reference(q, k, v, gates, (0, 1, 2, 3))
    ratio = RATIO[torch.float32] if dtype == torch.float32 else 1e-2  # the output's own rounding
    _close(expected, out, ratio)


@needs_kernel
def test_threads_do_not_change_the_result_and_inputs_are_untouched():
    q, k, v, gates = _inputs(2, 8, 9, 3, 8, 70, 4, dtype=torch.float32)
    copies = [t.clone() for t in (q, k, v, *gates.values())]
    one = fused_recurrent_plstm2d(q, k, v, **gates, orientations=(0, 1, 2, 3), num_threads=1)
    many = fused_recurrent_plstm2d(q, k, v, **gates, orientations=(0, 1, 2, 3), num_threads=5)
    assert torch.equal(one, many)
    for before, after in zip(copies, (q, k, v, *gates.values()), strict=True):
        assert torch.equal(before, after)


@needs_kernel
def test_non_contiguous_inputs():
    q, k, v, gates = _inputs(2, 6, 7, 2, 8, 8, 2)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    gt = {n: t.transpose(2, 3).contiguous().transpose(2, 3) for n, t in gates.items()}
    assert not qt.is_contiguous()
    out = fused_recurrent_plstm2d(qt, k, v, **gt, orientations=(1, 2))
    _close(_reference(q, k, v, gates, (1, 2)), out, RATIO[torch.float64])


@needs_kernel
def test_nan_propagates_like_the_reference():
    q, k, v, gates = _inputs(1, 4, 4, 1, 4, 4, 1)
    v[0, 1, 2, 0, 0] = float("nan")
    plain = {name: t[0] for name, t in gates.items()}
    out = fused_recurrent_plstm2d(q, k, v, **plain)
    assert torch.equal(out.isnan(), naive_plstm2d(q, k, v, **plain).isnan())


@needs_kernel
def test_bad_inputs_get_one_clear_line():
    q, k, v, gates = _inputs(1, 3, 4, 2, 4, 4, 2)
    with pytest.raises(ValueError, match=r"gate mark_u must have shape \[O, B, X, Y, H\]"):
        fused_recurrent_plstm2d(q, k, v, **{**gates, "mark_u": gates["mark_u"][0]}, orientations=(0, 1))
    with pytest.raises(ValueError, match="orientations must be values in 0..3"):
        fused_recurrent_plstm2d(q, k, v, **gates, orientations=(0, 4))
    with pytest.raises(ValueError, match="orientations must be values in 0..3"):
        fused_recurrent_plstm2d(q, k, v, **{n: t[:0] for n, t in gates.items()}, orientations=())
    with pytest.raises(ValueError, match=r"gate source_r must have shape \[B, X, Y, H\]"):
        fused_recurrent_plstm2d(q, k, v, **gates)  # [O, B, X, Y, H] gates need `orientations`
    with pytest.raises(ValueError, match="num_threads must be >= 1; got 0"):
        fused_recurrent_plstm2d(q, k, v, **gates, orientations=(0, 1), num_threads=0)
    leaf = q.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="has no backward"):
        fused_recurrent_plstm2d(leaf, k, v, **gates, orientations=(0, 1))
    with torch.no_grad():
        fused_recurrent_plstm2d(leaf, k, v, **gates, orientations=(0, 1))  # fine without grad mode


@needs_kernel
@pytest.mark.parametrize("mode", ["P", "D"])
def test_layer_inference_uses_the_kernel_and_matches_the_chunked_form(mode, monkeypatch):
    torch.manual_seed(1)
    layer = PLSTM2D(64, 2, mode=mode).eval()
    with torch.no_grad():  # gates that differ per cell and orientation
        layer.gate_weight.normal_(0, 0.3)
        layer.gate_bias.normal_(0, 1)
        if mode == "P":
            layer.orientation_weight.normal_(0, 5)
    x = torch.randn(2, 11, 13, 64)
    calls, original = [], PLSTM2D._fused
    monkeypatch.setattr(PLSTM2D, "_fused", lambda self, *a: calls.append(1) or original(self, *a))
    with torch.no_grad():
        fast = layer(x)
        assert calls, "impl='auto' under no_grad on the CPU should run the native kernel"
        layer.impl = "chunk"
        chunked = layer(x)
    _close(chunked, fast, RATIO[torch.float32])
    # with autograd the layer keeps the chunked form (the kernel has no backward)
    layer.impl, calls[:] = "auto", []
    out = layer(x)
    assert not calls and out.requires_grad
    _close(chunked, out.detach(), RATIO[torch.float32])


def test_layer_falls_back_without_native_kernels():
    layer = PLSTM2D(32, 2).eval()
    x = torch.randn(1, 17, 16, 32)
    with torch.no_grad():
        config.set_native(False)
        try:
            assert not layer._use_fused(x)
            slow = layer(x)
        finally:
            config.set_native(True)
        with config.backend("torch"):
            assert not layer._use_fused(x)
    assert slow.shape == x.shape


def test_kernel_cache_and_missing_compiler(tmp_path):
    """A build lands in the cache folder and is reused; without a compiler the loader gives one line."""
    script = (
        "from recvision.ops.plstm2d import fused_recurrent_available as f; import sys; p = f(); "
        "print(p if p else 'ok'); sys.exit(0)"
    )
    full = {**os.environ, "RECVISION_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=full, timeout=300)
    if fused_recurrent_available() is None:
        assert done.stdout.strip() == "ok", done.stderr
        built = list((tmp_path / "native").glob("plstm2d_fused_recurrent-*.so"))
        assert len(built) == 1
        stamp = built[0].stat().st_mtime_ns
        again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=full, timeout=300)
        assert again.stdout.strip() == "ok" and built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
        # a damaged cached library is never opened (it could crash the process) but rebuilt: garbage, a truncated
        # file, one flipped byte in the code
        good = built[0].read_bytes()
        flipped = bytearray(good)
        flipped[len(good) // 2] ^= 0xFF
        for damaged in (b"not a library", good[: len(good) // 2], bytes(flipped)):
            built[0].write_bytes(damaged)
            run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=full, timeout=300)
            assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
            assert built[0].read_bytes() == good
    no_cc = {**full, "CC": "", "PATH": str(tmp_path / "empty")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=no_cc, timeout=300)
    assert "no C compiler found" in done.stdout, done.stdout + done.stderr
    off = {**full, "RECVISION_NATIVE": "0"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=off, timeout=300)
    assert "native CPU kernels are off" in done.stdout, done.stdout + done.stderr


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RECVISION_CACHE_DIR", str(tmp_path / "a"))
    assert native.native_cache_dir() == tmp_path / "a" / "native"
    monkeypatch.delenv("RECVISION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert native.native_cache_dir() == tmp_path / "xdg" / "recvision" / "native"
    assert _KERNEL.source.is_file()  # the C source ships with the package


def test_native_switch():
    cpu = torch.zeros(1)
    assert config.use_native(cpu) == config.native_enabled()
    assert not config.use_native(cpu, "torch") and not config.use_native(torch.zeros(1, device="meta"))
    with pytest.raises(ValueError, match="set_native expects True or False"):
        config.set_native(1)
    script = "import recvision.config as c; print(c.native_enabled())"
    for value, expected in (("off", "False"), ("TRUE", "True"), ("banana", "True")):
        env = {**os.environ, "RECVISION_NATIVE": value}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0 and done.stdout.strip() == expected, done.stderr
        # a typo warns (one line) instead of stopping the import
        assert ("RECVISION_NATIVE must be 0 or 1, got 'banana'; using 1" in done.stderr) == (value == "banana")


def test_a_failing_build_warns_once_and_falls_back(tmp_path, monkeypatch):
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    kernel = native.NativeKernel(name="test_broken", source=broken, signatures={})
    monkeypatch.setenv("RECVISION_CACHE_DIR", str(tmp_path / "cache"))
    if native._compiler_or_none() is None:
        pytest.skip("no C compiler")
    with pytest.warns(RuntimeWarning, match="native kernel test_broken unavailable"):
        assert native.load_native(kernel) is None
    assert "failed on broken.c" in native.native_problem(kernel)
    assert not list((tmp_path / "cache" / "native").glob("*"))  # no half-written library left behind
    native._LOADED.pop("test_broken", None)


@needs_kernel
def test_inputs_on_another_device_and_odd_orientation_types():
    q, k, v, gates = _inputs(1, 3, 4, 2, 4, 4, 2)
    for name in ("k", "v"):
        args = {"q": q, "k": k, "v": v, name: torch.empty_like({"k": k, "v": v}[name], device="meta")}
        with pytest.raises(ValueError, match=f"runs on dense CPU tensors; got {name} on meta"):
            fused_recurrent_plstm2d(**args, **gates, orientations=(0, 1))
    with pytest.raises(ValueError, match="gate mark_l is on meta but q is on cpu"):
        fused_recurrent_plstm2d(q, k, v, **{**gates, "mark_l": gates["mark_l"].to("meta")}, orientations=(0, 1))
    numpy_codes = torch.tensor([0, 3]).numpy()
    out = fused_recurrent_plstm2d(q, k, v, **gates, orientations=list(numpy_codes))
    _close(_reference(q, k, v, gates, (0, 3)), out, RATIO[torch.float64])
    for bad in ((True, 1), 3, (0.0, 1)):
        with pytest.raises(ValueError, match="orientations must be values in 0..3"):
            fused_recurrent_plstm2d(q, k, v, **gates, orientations=bad)
    with pytest.raises(ValueError, match="q must be a tensor"):
        fused_recurrent_plstm2d(None, k, v, **gates, orientations=(0, 1))


@needs_kernel
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_traced_model_does_not_bake_in_the_kernel_output():
    """``torch.jit.trace`` and ``torch.export`` cannot see what the kernel writes, so the layer runs a PyTorch form
    while tracing: the traced and the exported model must follow a new input."""
    torch.manual_seed(0)
    layer = PLSTM2D(32, 2).eval()
    with torch.no_grad():
        layer.gate_weight.normal_(0, 0.3)
        layer.orientation_weight.normal_(0, 5)
        x, x2 = torch.randn(1, 9, 7, 32), torch.randn(1, 9, 7, 32)
        traced = torch.jit.trace(layer, x, check_trace=False)
        _close(layer(x2).double(), traced(x2).double(), RATIO[torch.float32])
        exported = torch.export.export(layer, (x,)).module()
        _close(layer(x2).double(), exported(x2).double(), RATIO[torch.float32])
        with pytest.raises(RuntimeError, match="cannot be traced or compiled"):
            torch.jit.trace(lambda q: fused_recurrent_plstm2d(q, q, q, *[q[..., 0]] * 9), torch.randn(1, 2, 2, 1, 2))


def test_untrusted_or_read_only_cache_builds_privately(tmp_path, monkeypatch):
    """A cache folder others can write to is not used (the library is code): the kernel is built in a private
    temporary folder, which is removed, and nothing is written to the shared folder."""
    if native._compiler_or_none() is None:
        pytest.skip("no C compiler")
    shared = tmp_path / "shared"
    (shared / "native").mkdir(parents=True)
    (shared / "native").chmod(0o777)
    monkeypatch.setenv("RECVISION_CACHE_DIR", str(shared))
    monkeypatch.setattr(native, "_LOADED", {})
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "private"))
    (tmp_path / "private").mkdir()
    with pytest.warns(RuntimeWarning, match="can be written by other users, so it is not used"):
        assert native.load_native(_KERNEL) is not None
    assert not list((shared / "native").iterdir())
    assert not list((tmp_path / "private").iterdir())  # the private build folder is gone again


def test_compiler_problems_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-xyz --flag")
    with pytest.raises(RuntimeError, match=r"the compiler in \$CC \('no-such-compiler-xyz --flag'\) is not found"):
        native._compiler()
    failing = tmp_path / "fakecc"
    failing.write_text("#!/bin/sh\necho 'warning: noise' >&2\necho 'fatal error: broken' \nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    broken = native.NativeKernel(name="test_fakecc", source=_KERNEL.source, signatures={})
    with pytest.raises(RuntimeError, match=r"fakecc failed on fused_recurrent.c \(exit code 3\): fatal error: broken"):
        native._build(broken, native._compiler(), tmp_path / "x.so")
    assert not (tmp_path / "x.so").exists()


def test_read_only_cache_with_a_damaged_library_builds_privately(tmp_path, monkeypatch):
    if native._compiler_or_none() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("RECVISION_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_LOADED", {})
    name = native._library_name(_KERNEL, native._compiler())
    (tmp_path / "native").mkdir(mode=0o700)
    (tmp_path / "native" / name).write_bytes(b"\x7fELF damaged")
    (tmp_path / "native" / (name + ".sha256")).write_text("0" * 64 + "\n")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else real_access(p, mode))
    lib = native.load_native(_KERNEL)  # no warning: a read-only cache is expected
    assert lib is not None and (tmp_path / "native" / name).read_bytes() == b"\x7fELF damaged"
