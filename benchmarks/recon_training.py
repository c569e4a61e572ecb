"""Training speed of the recon models on the CPU: fp32 vs bf16 autocast, channels-last, and the data pipeline.

Two tables, every configuration in a fresh process (so peak memory is its own), ratios measured side by side in one
run::

    python benchmarks/recon_training.py                    # both tables, 2 threads
    python benchmarks/recon_training.py --only steps --models cirim --repeats 5
    python benchmarks/recon_training.py --only data --slices 6

``steps``: optimizer steps per second of each model (the default weights' configs, ``configs/recon/<name>.yaml``)
on one 128 x 128, 8-coil slice (batch 1), fp32 / bf16 autocast, contiguous (NCHW) / channels-last conv weights;
warm-up steps excluded, median of ``--repeats`` timed blocks of ``--steps`` steps each.

``data``: slices per second through :class:`recon.training.data.SliceMaskDataset` and the training loop's
DataLoader (:func:`recon.training.loop.make_loader`) on a fastMRI-size file (640 x 368, 15 coils, written once with
:mod:`recon.data.synthetic`), with 0 and 2 workers, and with the coil-map cache cold (first epoch) and warm.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "recon"
MODES = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def _child_steps(model_name: str, precision: str, channels_last: bool, steps: int, repeats: int) -> dict:
    import torch

    from recon.config import load_config
    from recon.models import create_model
    from recon.training.loop import _to_target
    from recon.training.losses import weighted_prediction_loss

    config = load_config(CONFIGS / f"{model_name}.yaml")
    torch.manual_seed(0)
    model = create_model(config.model, **config.model_config)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    coils, size = 8, 128
    kspace = torch.randn(1, coils, size, size, dtype=torch.complex64) * 0.05
    mask = torch.zeros(1, 1, 1, size)
    mask[..., ::4] = 1
    mask[..., size // 2 - 5 : size // 2 + 5] = 1
    kspace = kspace * mask
    sens = torch.randn(1, coils, size, size, dtype=torch.complex64)
    sens = sens / sens.abs().pow(2).sum(1, keepdim=True).sqrt()
    target = torch.rand(1, size, size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            predictions = model.predictions(kspace, mask, sens)
        predictions = [[_to_target(p, target).abs() for p in c] for c in predictions]
        loss = weighted_prediction_loss(predictions, target, 1.0, 1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up: oneDNN primitive creation, allocator
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s_per_step": statistics.median(times), "peak_mib": peak}


def _child_data(path: str, workers: int, epochs: int) -> dict:
    from recon.config import DataConfig
    from recon.training.data import SliceMaskDataset
    from recon.training.loop import TrainConfig, make_loader

    dataset = SliceMaskDataset(Path(path).parent, DataConfig(), seed=0)
    n = len(dataset)
    config = TrainConfig(max_steps=n * epochs, num_workers=workers, batch_size=1)
    per_epoch, start = [], time.perf_counter()
    for i, _batch in enumerate(make_loader(dataset, config)):
        if (i + 1) % n == 0:
            per_epoch.append(time.perf_counter() - start)
            start = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"cold": n / per_epoch[0], "warm": n / statistics.median(per_epoch[1:]), "peak_mib": peak}


def _run_child(args: list[str], threads: int) -> dict:
    env_cmd = [sys.executable, __file__, "--child", json.dumps(args), "--threads", str(threads)]
    out = subprocess.run(env_cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("steps", "data"), help="run one table")
    parser.add_argument("--models", default=None, help="comma-separated model names (default: every recon model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed block (%(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks; the median is reported (%(default)s)")
    parser.add_argument("--slices", type=int, default=8, help="slices of the fastMRI-size file (%(default)s)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs over the file: 1 cold + warm (%(default)s)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    from recon.models import MODEL_NAMES

    torch.set_num_threads(args.threads)
    if args.child is not None:
        kind, *rest = json.loads(args.child)
        result = _child_steps(*rest) if kind == "steps" else _child_data(*rest)
        print(json.dumps(result))
        return

    print(f"torch {torch.__version__}, {args.threads} threads; every configuration in a fresh process\n")
    if args.only in (None, "steps"):
        print("| model | precision | channels-last | s / step | steps / s | vs fp32 NCHW | peak MiB |")
        print("|---|---|---|---:|---:|---:|---:|")
        for name in [m.strip() for m in (args.models or ",".join(MODEL_NAMES)).split(",") if m.strip()]:
            base = None
            for precision, channels_last in MODES:
                r = _run_child(["steps", name, precision, channels_last, args.steps, args.repeats], args.threads)
                base = base or r["s_per_step"]
                print(
                    f"| {name} | {precision} | {'yes' if channels_last else 'no'} | {r['s_per_step']:.3f} | "
                    f"{1 / r['s_per_step']:.2f} | {base / r['s_per_step']:.2f}x | {r['peak_mib']:.0f} |",
                    flush=True,
                )
    if args.only in (None, "data"):
        from recon.data.synthetic import write_synthetic_dataset

        with tempfile.TemporaryDirectory() as tmp:
            (path,) = write_synthetic_dataset(
                Path(tmp), 1, args.slices, (640, 368), 15, "ellipses", 0, recon_size=(320, 320), prefix="bench"
            )
            print(f"\ndata pipeline: {args.slices} slices of 640 x 368 x 15 coils, {args.epochs} epochs")
            print(
                "| workers | slices / s, first epoch (coil maps computed) | slices / s, later epochs (cached) | "
                "peak MiB (main process) |"
            )
            print("|---:|---:|---:|---:|")
            for workers in (0, 2):
                r = _run_child(["data", str(path), workers, args.epochs], args.threads)
                print(f"| {workers} | {r['cold']:.1f} | {r['warm']:.1f} | {r['peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
