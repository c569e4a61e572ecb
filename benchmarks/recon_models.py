"""CPU benchmark of the recon models: per-slice inference time and peak memory.

Each model runs with its reference configuration (CIRIM: 5 cascades x 8 time steps, 64 channels, IndRNN; RIM: 8
steps, GRU, 64 channels; RecurrentVarNet: 8 steps, 128 hidden channels, 4 layers) on one slice of 320 x 320 with
15 coils (``--quick``: 64 x 64 with 4 coils), batch 1, forward only under ``torch.inference_mode()`` with
``torch.set_num_threads(2)``. Every model runs in a FRESH PROCESS (this script with the hidden ``--worker`` flag) so
that its peak memory is its own: the worker builds the model and the input, records its resident set size, resets
the kernel's RSS high-water mark (Linux), runs one warm-up forward (not timed) and ``--repeats`` timed forwards, and
prints the median time and the peak extra memory (``ru_maxrss - RSS before``) as JSON. Output: a markdown table.

Usage (from the repository root)::

    python benchmarks/recon_models.py            # full size (slow on 2 cores)
    python benchmarks/recon_models.py --quick
    python benchmarks/recon_models.py --models rim --repeats 5 --json out.json
    python benchmarks/recon_models.py --compare              # ours vs DIRECT / ATOMMIC, same weights
    python benchmarks/recon_models.py --compare --precision fp32 bf16   # ours in fp32 and in bf16 vs their fp32

``--compare`` times the reference implementations of the same models, DIRECT (``direct-recon``) and ATOMMIC, when
their side environments exist (``--direct-python`` / ``--atommic-python``, or the environment variables
``RECON_DIRECT_PYTHON`` / ``RECON_ATOMMIC_PYTHON``; defaults ``/tmp/venv-direct/bin/python`` and
``/tmp/venv-atommic/bin/python``; a missing one is skipped). For every model and library: a worker in the
library's interpreter builds its model (seeded init), exports the weights to a temporary safetensors file and
times it on the same slice in its own layout (real pairs ``(1, coils, H, W, 2)``); then a worker of ours loads
those weights through :mod:`recon.interop` (so "ours" is our model configured to reproduce theirs) and times it.
Both run side by side in the same invocation, each in a fresh process, with the same threads and repeats; the
table gives ours/theirs ratios of the median wall time, of the median process CPU time (steadier than wall time
on a loaded machine) and of the peak extra memory (< 1: ours is faster / smaller).
On a shared machine the numbers are noisy. DIRECT's reference RIM is its own ``Conv2dGRU``-based RIM (our
``regularizer="gru_stack"``); ATOMMIC's RIM is its CIRIM with one cascade; ATOMMIC uses a centred ortho FFT here.

``--precision`` (one or more of ``fp32``, ``bf16``) sets the precision ours runs in (:mod:`recon.inference`: ``bf16``
is bfloat16 autocast with channels-last conv weights, FFTs and data consistency in complex64); the reference
libraries always run in fp32, once per model, and every precision of ours is compared with that one measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _measure import maxrss_mib, median_time, reset_peak_rss, status_kib

NUM_THREADS = 2
RESULT_PREFIX = "BENCH_RESULT "
CONFIGS: dict[str, dict[str, Any]] = {
    "cirim": {"num_cascades": 5, "num_steps": 8, "hidden_channels": 64, "cell": "indrnn"},
    "rim": {"num_steps": 8, "hidden_channels": 64, "cell": "gru"},
    "recurrentvarnet": {"num_steps": 8, "hidden_channels": 128, "num_layers": 4},
}
LABELS = {"cirim": "CIRIM 5x8, 64 ch", "rim": "RIM 8 steps, GRU 64", "recurrentvarnet": "RecurrentVarNet 8, 128 ch x 4"}
LIBRARIES = {"direct": "/tmp/venv-direct/bin/python", "atommic": "/tmp/venv-atommic/bin/python"}
# The reference configurations in each library's own terms (their constructor / config names).
_ATOMMIC_RIM_LAYOUT = {
    "conv_kernels": [5, 3, 3],
    "conv_dilations": [1, 2, 1],
    "conv_bias": [True, True, False],
    "recurrent_kernels": [1, 1, 0],
    "recurrent_dilations": [1, 1, 0],
    "recurrent_bias": [True, True, False],
    "depth": 2,
    "conv_dim": 2,
    "no_dc": True,
    "keep_prediction": True,
    "dimensionality": 2,
}
_ATOMMIC_COMMON = {
    "fft_centered": True,
    "fft_normalization": "ortho",
    "spatial_dims": [-2, -1],
    "coil_dim": 1,
    "coil_combination_method": "SENSE",
    "reconstruction_loss": {"l1": 1.0},
}
THEIR_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "direct": {
        "cirim": {"depth": 2, "time_steps": 8, "recurrent_hidden_channels": 64, "num_cascades": 5},
        "rim": {"hidden_channels": 64, "length": 8, "depth": 2, "no_parameter_sharing": False,
                "image_initialization": "sense"},
        "recurrentvarnet": {"num_steps": 8, "recurrent_hidden_channels": 128, "recurrent_num_layers": 4,
                            "learned_initializer": True, "initializer_initialization": "sense"},
    },
    "atommic": {
        "cirim": {"recurrent_layer": "IndRNN", "conv_filters": [64, 64, 2], "recurrent_filters": [64, 64, 0],
                  "time_steps": 8, "num_cascades": 5, **_ATOMMIC_RIM_LAYOUT, **_ATOMMIC_COMMON},
        "rim": {"recurrent_layer": "GRU", "conv_filters": [64, 64, 2], "recurrent_filters": [64, 64, 0],
                "time_steps": 8, "num_cascades": 1, **_ATOMMIC_RIM_LAYOUT, **_ATOMMIC_COMMON},
        "recurrentvarnet": {"in_channels": 2, "num_steps": 8, "recurrent_hidden_channels": 128,
                            "recurrent_num_layers": 4, "no_parameter_sharing": True, "learned_initializer": True,
                            "initializer_initialization": "sense", "initializer_channels": [32, 32, 64, 64],
                            "initializer_dilations": [1, 1, 2, 4], "initializer_multiscale": 1,
                            "dimensionality": 2, **_ATOMMIC_COMMON},
    },
}  # fmt: skip


def _slice(size: int, coils: int) -> tuple[Any, Any, Any]:
    """One synthetic slice, complex64: ``(masked_kspace [1, C, H, W], mask [1, 1, 1, W], sens [1, C, H, W])``.

    Plain torch only (no ``recon`` import), so that the reference libraries' workers can build it too.
    """
    import torch

    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, size, size, dtype=torch.complex64, generator=g)
    sens = torch.randn(1, coils, size, size, dtype=torch.complex64, generator=g)
    sens = sens / sens.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = torch.zeros(1, 1, 1, size)
    mask[..., ::4] = 1
    mask[..., size // 2 - size // 25 : size // 2 + size // 25] = 1
    dims = (-2, -1)
    kspace = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(image * sens, dim=dims), norm="ortho"), dim=dims)
    return torch.where(mask != 0, kspace, torch.zeros((), dtype=kspace.dtype)), mask, sens


def _measure(model: Any, call: Any, repeats: int) -> dict[str, Any]:
    import torch

    # torch.broadcast_shapes imports sympy lazily (~40 MiB of module code) on first use; import it before the
    # memory baseline in every worker so that the peak counts the forward pass, not a one-time library import
    torch.broadcast_shapes((1,), (1,))
    params = sum(p.numel() for p in model.parameters())
    cpu_times: list[float] = []

    def timed_call() -> None:
        # process CPU time too: on a loaded machine it varies far less than wall time (it ignores waiting)
        start = time.process_time()
        call()
        cpu_times.append(time.process_time() - start)

    rss_before = status_kib("VmRSS")
    reset = reset_peak_rss()
    with torch.inference_mode():
        median_s, times = median_time(timed_call, repeats)
    peak = maxrss_mib() - rss_before / 1024 if (reset and rss_before is not None) else None
    cpu_s = statistics.median(cpu_times[1:])  # the first call is the untimed warm-up
    return {
        "params": params,
        "median_s": median_s,
        "times_s": times,
        "cpu_s": cpu_s,
        "peak_mib": peak,
        "torch": torch.__version__,
    }


def worker(
    name: str,
    size: int,
    coils: int,
    repeats: int,
    library: str | None = None,
    weights: str | None = None,
    precision: str = "fp32",
    channels_last: bool | None = None,
) -> dict[str, Any]:
    """Time ``repeats`` forwards of one of our models on one slice (run in its own process).

    With ``weights`` (a safetensors file exported by :func:`worker_theirs`), the model is ``library``'s model
    converted by :mod:`recon.interop`; else it is built from :data:`CONFIGS`. ``precision`` and ``channels_last``
    as :func:`recon.inference.make_reconstructor`.
    """
    import torch

    from recon.inference import make_reconstructor
    from recon.models import create_model

    torch.set_num_threads(NUM_THREADS)
    torch.manual_seed(0)
    if weights is None:
        model = create_model(name, **CONFIGS[name]).eval()
    else:
        from recon.interop import load_atommic_checkpoint, load_direct_checkpoint, read_state_dict

        _, config = read_state_dict(weights)
        if library == "direct":
            model = load_direct_checkpoint(weights, name, **config)
        else:
            model = load_atommic_checkpoint(weights, name, config=config)
    kspace, mask, sens = _slice(size, coils)
    layout = {} if channels_last is None else {"channels_last": channels_last}
    run = make_reconstructor(model, precision=precision, **layout)
    result = _measure(model, lambda: run(kspace, mask, sens), repeats)
    impl = "ours" if library is None else f"ours ({library} weights)"
    if channels_last is not None:
        precision += " channels-last" if channels_last else " NCHW"
    return {"model": name, "impl": impl, "precision": precision, **result}


def _build_theirs(library: str, name: str, size: int, coils: int) -> tuple[Any, Any]:
    """``library``'s model (seeded default init) and a call on the slice in its layout (their interpreter)."""
    import torch

    kspace, mask, sens = _slice(size, coils)
    k, s = torch.view_as_real(kspace).contiguous(), torch.view_as_real(sens).contiguous()
    m = mask.expand(1, 1, size, size).unsqueeze(-1).contiguous()  # (N, 1, H, W, 1)
    config = THEIR_CONFIGS[library][name]
    if library == "direct":
        from functools import partial

        from direct.data.transforms import fft2, ifft2

        fwd, bwd = partial(fft2, centered=True, normalized=True), partial(ifft2, centered=True, normalized=True)
        if name == "cirim":
            from direct.nn.cirim.cirim import CIRIM

            model = CIRIM(fwd, bwd, **config).eval()
            return model, lambda: next(model(k, m, s))
        if name == "rim":
            from direct.nn.rim.rim import RIM

            model = RIM(fwd, bwd, **config).eval()
            return model, lambda: model(None, k, m, s)
        from direct.nn.recurrentvarnet.recurrentvarnet import RecurrentVarNet

        model = RecurrentVarNet(fwd, bwd, **config).eval()
        return model, lambda: model(k, m, s)
    from omegaconf import OmegaConf

    if name == "recurrentvarnet":
        from atommic.collections.reconstruction.nn.recurrentvarnet import RecurrentVarNet as Model
    else:
        from atommic.collections.reconstruction.nn.cirim import CIRIM as Model
    model = Model(OmegaConf.create(config), trainer=None).eval()
    dims = (-2, -1)
    coil_images = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(kspace, dim=dims), norm="ortho"), dim=dims)
    initial = torch.view_as_real((coil_images * sens.conj()).sum(1)).contiguous()
    if name != "recurrentvarnet":
        initial = torch.empty(0)
    return model, lambda: model.forward(y=k, sensitivity_maps=s, mask=m, initial_prediction=initial, sigma=1.0)


def worker_theirs(library: str, name: str, size: int, coils: int, repeats: int, export: str) -> dict[str, Any]:
    """Build ``library``'s model, export its weights (and config) to ``export``, then time it (their process)."""
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(NUM_THREADS)
    torch.manual_seed(0)
    model, call = _build_theirs(library, name, size, coils)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, export, metadata={"config": json.dumps(THEIR_CONFIGS[library][name])})
    return {"model": name, "impl": library, **_measure(model, call, repeats)}


def run_one(
    name: str, size: int, coils: int, repeats: int, timeout: float, extra: list[str] | None = None, python: str = ""
) -> dict[str, Any]:
    cmd = [python or sys.executable, __file__, "--worker", name, "--size", str(size), "--coils", str(coils)]
    cmd += ["--repeats", str(repeats), *(extra or [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(NUM_THREADS), "MKL_NUM_THREADS": str(NUM_THREADS)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired:
        return {"model": name, "error": f"timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    return {"model": name, "error": tail[0]}


def table(results: list[dict[str, Any]], size: int, coils: int) -> str:
    lines = [
        f"Per-slice inference, {size}x{size}, {coils} coils, batch 1, {NUM_THREADS} threads (median, warm-up excluded)",
        "",
        "| model | precision | params | time / slice (s) | peak extra memory (MiB) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        label = LABELS[r["model"]]
        if "error" in r:
            lines.append(f"| {label} | {r.get('precision', '')} | - | {r['error']} | - |")
            continue
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| {label} | {r['precision']} | {r['params']:,} | {r['median_s']:.3f} | {peak} |")
    return "\n".join(lines)


def compare(
    names: list[str],
    size: int,
    coils: int,
    repeats: int,
    timeout: float,
    pythons: dict[str, str],
    precisions: tuple[str, ...] = ("fp32",),
    layouts: tuple[str, ...] = ("auto",),
) -> list[dict[str, Any]]:
    """For each model and available library: their worker (exports weights, fp32), then ours on those weights in
    each of the (precision, conv layout) pairs of :func:`configurations`."""
    configs = configurations(precisions, layouts)
    results = []
    with tempfile.TemporaryDirectory(prefix="recon_compare_") as tmp:
        for name in names:
            for library, python in pythons.items():
                if not Path(python).exists():
                    print(f"skipping {library}: no interpreter at {python}", file=sys.stderr)
                    continue
                weights = str(Path(tmp) / f"{library}_{name}.safetensors")
                extra = ["--library", library, "--weights", weights]
                theirs = run_one(name, size, coils, repeats, timeout, [*extra, "--theirs"], python)
                for precision, layout in configs:
                    args = [*extra, "--precision", precision, "--channels-last", layout]
                    ours = run_one(name, size, coils, repeats, timeout, args) if "error" not in theirs else theirs
                    results.append(
                        {"model": name, "library": library, "precision": precision, "theirs": theirs, "ours": ours}
                    )
                for r in results[-len(configs) :]:  # the rows so far, for long runs watched from a log
                    print(f"done {name} / {library}: {json.dumps(r)}", file=sys.stderr, flush=True)
    return results


def configurations(precisions: tuple[str, ...], layouts: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (precision, ``--channels-last`` value) pairs to run ours in, in order, without two that resolve to the
    same conv layout (``auto`` is :func:`recon.inference.prepare_model`'s default, channels-last)."""
    seen, pairs = set(), []
    for precision in precisions:
        for layout in layouts:
            resolved = (precision, layout != "off")
            if resolved not in seen:
                seen.add(resolved)
                pairs.append((precision, layout))
    return pairs


def compare_table(results: list[dict[str, Any]], size: int, coils: int) -> str:
    lines = [
        f"Ours vs reference implementations, same weights: {size}x{size}, {coils} coils, batch 1, {NUM_THREADS} "
        "threads, forward only, median of the timed runs (fresh process each; shared machine: noisy); theirs in fp32, "
        "ours in the precision given",
        "",
        "| model | library | ours in | theirs (s) | ours (s) | time ours/theirs | CPU time ours/theirs "
        "| theirs peak (MiB) | ours peak (MiB) | memory ours/theirs |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        label, theirs, ours = LABELS[r["model"]], r["theirs"], r["ours"]
        precision = ours.get("precision", r.get("precision", "fp32"))
        if "error" in theirs or "error" in ours:
            lines.append(
                f"| {label} | {r['library']} | {precision} | {theirs.get('error', '')} | {ours.get('error', '')} "
                "| - | - | - | - | - |"
            )
            continue
        t_ratio = ours["median_s"] / theirs["median_s"]
        peaks = (theirs["peak_mib"], ours["peak_mib"])
        m_ratio = f"{peaks[1] / peaks[0]:.2f}" if None not in peaks and peaks[0] > 0 else "n/a"
        fmt = [("n/a" if p is None else f"{p:.0f}") for p in peaks]
        lines.append(
            f"| {label} | {r['library']} (torch {theirs['torch']}) | {precision} | {theirs['median_s']:.3f} "
            f"| {ours['median_s']:.3f} "
            f"| {t_ratio:.2f} | {ours['cpu_s'] / theirs['cpu_s']:.2f} | {fmt[0]} | {fmt[1]} | {m_ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--quick", action="store_true", help="64x64 with 4 coils instead of 320x320 with 15")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--coils", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per model")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--compare", action="store_true", help="time DIRECT / ATOMMIC too, on the same weights")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=list(LIBRARIES))
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        help="precision(s) ours runs in: fp32 and / or bf16 (the references always run in fp32)",
    )
    parser.add_argument("--direct-python", default=os.environ.get("RECON_DIRECT_PYTHON", LIBRARIES["direct"]))
    parser.add_argument("--atommic-python", default=os.environ.get("RECON_ATOMMIC_PYTHON", LIBRARIES["atommic"]))
    parser.add_argument(
        "--channels-last",
        nargs="+",
        choices=("auto", "on", "off"),
        default=["auto"],
        help="conv weights of ours in channels-last: auto = recon.inference's default (channels-last); several "
        "values run ours in each layout (e.g. --precision fp32 --channels-last off on: fp32 NCHW and channels-last)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--library", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--theirs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = args.size or (64 if args.quick else 320)
    coils = args.coils or (4 if args.quick else 15)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    bad = [p for p in args.precision if p not in ("fp32", "bf16")]
    if bad or (args.worker is not None and len(args.precision) != 1):
        parser.error(f"--precision takes fp32 and / or bf16; got {' '.join(args.precision)}")
    if args.worker is not None and len(args.channels_last) != 1:
        parser.error("a worker takes one --channels-last value")
    if args.worker is not None:
        if args.theirs:
            result = worker_theirs(args.library, args.worker, size, coils, args.repeats, args.weights)
        else:
            layout = {"auto": None, "on": True, "off": False}[args.channels_last[0]]
            args_ = (args.library, args.weights, args.precision[0], layout)
            result = worker(args.worker, size, coils, args.repeats, *args_)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return
    if args.compare:
        pythons = {"direct": args.direct_python, "atommic": args.atommic_python}
        libraries = {k: pythons[k] for k in args.libraries}
        results = compare(
            args.models,
            size,
            coils,
            args.repeats,
            args.timeout,
            libraries,
            tuple(args.precision),
            tuple(args.channels_last),
        )
        print(compare_table(results, size, coils))
    else:
        results = [
            run_one(
                name,
                size,
                coils,
                args.repeats,
                args.timeout,
                ["--precision", precision, "--channels-last", layout],
            )
            for name in args.models
            for precision, layout in configurations(tuple(args.precision), tuple(args.channels_last))
        ]
        print(table(results, size, coils))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": size, "coils": coils, "threads": NUM_THREADS, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
