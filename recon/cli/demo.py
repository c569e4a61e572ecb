"""``recon demo``: the whole pipeline on a small synthetic dataset, offline, in a few minutes on two CPU cores.

1. ``recon synth``: fully sampled multi-coil volumes of phantoms (held-out seed: not the data the default
   weights were trained on) into ``OUT/data``, and one volume of real anatomy the weights never saw (``--real-source``,
   default the held-out slab of nibabel's example brain EPI) into ``OUT/data_real``;
2. ``recon predict`` at 4x (centre fraction 0.08) and 8x (0.04) with equispaced masks, for the classical
   baselines (zero-filled RSS, compressed-sensing SENSE) and the shipped default CIRIM, RIM and RecurrentVarNet
   weights, into ``OUT/predictions/<acc>x/<method>`` (``OUT/predictions_real/...`` for the real volume);
3. ``recon evaluate`` of each against the targets (fastMRI SSIM / PSNR / NMSE): a printed table per data set and
   ``OUT/metrics.csv`` (per volume and mean, with a ``data`` column);
4. ``recon figure``: ``OUT/figures/demo_<acc>x.png`` (phantom) and ``demo_<acc>x_real.png`` (real anatomy), the
   middle slice of the first volume for every method.

Methods whose weights are not installed are skipped with a note. Everything is deterministic given ``--seed``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from recon.cli._common import CLIError, check_writable_dir, progress, resolve_device

HELP = "synthesise, reconstruct at 4x and 8x with every method, evaluate, draw figures"
DESCRIPTION = __doc__.split("\n\n", 1)[1].replace("``", "")
EXAMPLES = """\
  recon demo                          # writes ./recon_demo
  recon demo --out /tmp/demo --volumes 4 --slices 8
  recon demo --methods zero-filled cs cirim --accelerations 4
"""

SETTINGS = {4: 0.08, 8: 0.04}  # acceleration -> centre fraction (fastMRI's pairs)
# fewer fully sampled centre columns than this leave the ACS coil maps (and the models fed with them) unreliable
MIN_CENTRE_COLUMNS = 3
PREFIX = "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from recon.data.sources import HELDOUT_SOURCES
    from recon.data.synthetic import SOURCES
    from recon.inference import BASELINES, CS_METHODS, MODEL_NAMES

    parser.add_argument("--out", type=Path, default=Path("recon_demo"), help="output folder (%(default)s)")
    parser.add_argument("--volumes", type=int, default=2, help="synthetic volumes (%(default)s)")
    parser.add_argument("--slices", type=int, default=4, help="slices per volume (%(default)s)")
    parser.add_argument("--size", type=int, default=128, help="k-space size N x N (%(default)s, as trained)")
    parser.add_argument("--coils", type=int, default=8, help="coils (%(default)s, as trained)")
    parser.add_argument("--source", choices=SOURCES, default="phantom", help="image source (%(default)s)")
    parser.add_argument(
        "--real-source",
        choices=(*HELDOUT_SOURCES, "none"),
        default=HELDOUT_SOURCES[0],
        help="one held-out real-anatomy volume beside the phantoms (%(default)s; none: skip it)",
    )
    parser.add_argument("--seed", type=int, default=2026, help="data and mask seed (%(default)s)")
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        choices=(*BASELINES, *MODEL_NAMES),
        default=[*BASELINES, *MODEL_NAMES],
        help=f"methods to run, among {', '.join((*BASELINES, *MODEL_NAMES))} (all)",
    )
    parser.add_argument(
        "--accelerations", nargs="+", type=int, choices=sorted(SETTINGS), default=sorted(SETTINGS), help="(4 8)"
    )
    parser.add_argument("--cs-method", choices=CS_METHODS, default=CS_METHODS[0], help="CS regulariser (%(default)s)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def _clear_demo_files(folder: Path) -> None:
    """Remove the demo's own files from ``folder``; refuse to run in a folder holding anything else."""
    if not folder.is_dir():
        return
    foreign = [p.name for p in folder.iterdir() if p.suffix == ".h5" and not p.name.startswith(f"{PREFIX}_")]
    if foreign:
        raise CLIError(f"{folder}: holds files the demo did not write ({foreign[0]}, ...); choose another --out")
    for path in folder.glob(f"{PREFIX}_*.h5"):
        path.unlink()


def _load_methods(names: list[str]) -> dict[str, tuple[object, object]]:
    from recon.cli._common import load_default_model
    from recon.inference import BASELINES

    methods: dict[str, tuple[object, object]] = {}
    for name in names:
        if name in BASELINES:
            methods[name] = (name, None)
            continue
        try:
            methods[name] = load_default_model(name)
        except CLIError as err:
            print(f"recon demo: skipping {name}: {err}")
    return methods


def _figure(data_dir: Path, pred_root: Path, methods: list[str], path: Path, accel: int) -> None:
    """The middle slice of the first volume of ``data_dir`` for every method."""
    from recon.cli.evaluate import read_image_volume
    from recon.figures import comparison_figure

    first = sorted(data_dir.glob("*.h5"))[0]
    target = read_image_volume(first, ("reconstruction_rss",))
    index = target.shape[0] // 2
    images = {m: read_image_volume(pred_root / m / first.name, ("reconstruction",))[index] for m in methods}
    title = f"{first.name}  slice {index}  equispaced {accel}x"
    comparison_figure(target[index], images, path, title=title, maxval=float(target.max()))


def _run_set(
    label: str,
    files: list[Path],
    data_dir: Path,
    pred_root: Path,
    methods: dict[str, tuple[object, object]],
    args: argparse.Namespace,
    device: object,
) -> tuple[list[tuple[str, int, dict[str, float], float]], list[dict[str, object]]]:
    """Predict, evaluate and draw one data set; returns the table rows and the CSV rows."""
    from recon.cli.evaluate import csv_rows, evaluate_dirs
    from recon.cli.predict import predict_files
    from recon.inference import build_mask_func

    table: list[tuple[str, int, dict[str, float], float]] = []
    all_rows: list[dict[str, object]] = []
    jobs = [(accel, name) for accel in args.accelerations for name in methods]
    for number, (accel, name) in enumerate(progress(jobs, desc=f"demo ({label})", total=len(jobs), leave=True), 1):
        # one line per step, so a log (no progress bar when stderr is not a terminal) shows what runs and how it went
        step = f"recon demo: [{number}/{len(jobs)}] {label} data: {name} at {accel}x"
        print(f"{step} ...", flush=True)
        started = time.perf_counter()
        method, preprocessing = methods[name]
        if hasattr(method, "to"):
            method = method.to(device)
        pred_dir = pred_root / f"{accel}x" / name
        _clear_demo_files(pred_dir)
        summary = predict_files(
            files,
            check_writable_dir(pred_dir),
            method,
            build_mask_func("equispaced", accel, SETTINGS[accel]),
            seed=args.seed,
            cs_method=args.cs_method,
            device=device,
            overwrite=True,
            label=name,
            preprocessing=preprocessing,
        )
        if summary.failed:
            raise CLIError(f"{name} at {accel}x failed on {len(summary.failed)} file(s); see above")
        result = evaluate_dirs(data_dir, pred_dir, progress=False)
        mean = {metric: value[0] for metric, value in result.mean().items()}
        print(f"{step}: SSIM {mean['SSIM']:.4f}, PSNR {mean['PSNR']:.2f} dB ({time.perf_counter() - started:.1f} s)")
        table.append((name, accel, mean, summary.seconds / max(summary.slices, 1)))
        all_rows += csv_rows(result, data=label, method=name, acceleration=accel)
    return table, all_rows


def _print_table(title: str, table: list[tuple[str, int, dict[str, float], float]], cs_method: str) -> None:
    print(f"\n{title}")
    print(f"{'method':<16} {'accel':>5}  {'SSIM':>7}  {'PSNR':>7}  {'NMSE':>8}  {'s/slice':>8}")
    print("-" * 60)
    for name, accel, mean, seconds in sorted(table, key=lambda row: (row[1], -row[2]["SSIM"])):
        label = f"cs ({cs_method})" if name == "cs" else name
        print(
            f"{label:<16} {accel:>4}x  {mean['SSIM']:>7.4f}  {mean['PSNR']:>7.2f}  {mean['NMSE']:>8.5f}  "
            f"{seconds:>8.3f}"
        )


def _warn_small_centre(size: int, accelerations: list[int]) -> None:
    """One warning line on stderr per acceleration whose fully sampled centre is too narrow at ``size`` (the mask
    functions take ``round(size * fraction)`` columns)."""
    for accel in sorted(set(accelerations)):
        fraction = SETTINGS[accel]
        columns = round(size * fraction)
        if columns < MIN_CENTRE_COLUMNS:
            least = next(n for n in range(size, 4 * size + 64) if round(n * fraction) >= MIN_CENTRE_COLUMNS)
            print(
                f"recon demo: warning: --size {size} is too small for {accel}x: its fully sampled centre is {columns} "
                f"column(s) (centre fraction {fraction:g}), too few for coil maps, so the {accel}x results will be "
                f"poor; use --size {least} or more (128 as trained) or --accelerations without {accel}",
                file=sys.stderr,
                flush=True,
            )


def run(args: argparse.Namespace) -> int:
    from recon.cli.evaluate import write_csv
    from recon.data.synthetic import write_synthetic_dataset

    if args.volumes < 1 or args.slices < 1 or args.coils < 1 or args.size < 16:
        raise CLIError("--volumes, --slices, --coils must be >= 1 and --size >= 16")
    _warn_small_centre(args.size, args.accelerations)
    started = time.perf_counter()
    device = resolve_device(args.device)  # before the output folder is made
    out = check_writable_dir(args.out)
    methods = _load_methods(list(dict.fromkeys(args.methods)))
    if not methods:
        raise CLIError("no method left to run")

    shape = (args.size, args.size)
    sets = []
    data_dir = out / "data"
    _clear_demo_files(data_dir)  # a rerun with other options must not mix old and new volumes
    print(f"recon demo: writing {args.volumes} synthetic volumes ({args.source}, seed {args.seed}) to {data_dir}")
    files = write_synthetic_dataset(
        data_dir, args.volumes, args.slices, shape, args.coils, args.source, args.seed, prefix=PREFIX
    )
    sets.append(("phantom" if args.source == "phantom" else args.source, files, data_dir, out / "predictions", ""))
    real_dir = out / "data_real"
    _clear_demo_files(real_dir)
    # a rerun must not leave an earlier run's real-anatomy predictions or figures behind
    for method_dir in (out / "predictions_real").glob("*x/*"):
        if method_dir.is_dir():
            _clear_demo_files(method_dir)
    for figure in (out / "figures").glob("demo_*x_real.png"):
        figure.unlink()
    if args.real_source != "none":
        print(f"recon demo: writing 1 real-anatomy volume ({args.real_source}, never trained on) to {real_dir}")
        try:
            real = write_synthetic_dataset(
                real_dir, 1, args.slices, shape, args.coils, args.real_source, args.seed, prefix=PREFIX
            )
        except ImportError as err:
            raise CLIError(f"--real-source {args.real_source}: {err} (or pass --real-source none)") from None
        sets.append(("real", real, real_dir, out / "predictions_real", "_real"))

    all_rows: list[dict[str, object]] = []
    tables = []
    for label, set_files, set_dir, pred_root, suffix in sets:
        table, rows = _run_set(label, set_files, set_dir, pred_root, methods, args, device)
        tables.append((label, table))
        all_rows += rows
        for accel in args.accelerations:
            path = out / "figures" / f"demo_{accel}x{suffix}.png"
            _figure(set_dir, pred_root / f"{accel}x", list(methods), path, accel)
    write_csv(all_rows, out / "metrics.csv")

    slices = args.volumes * args.slices
    for label, table in tables:
        what = (
            f"{args.volumes} {label} volumes ({slices} slices)"
            if label != "real"
            else f"1 real-anatomy volume ({args.real_source}, {args.slices} slices)"
        )
        _print_table(f"{what}, {args.size}x{args.size}, {args.coils} coils, equispaced masks", table, args.cs_method)
    print("fastMRI metrics, data range = max of each target volume")
    print(f"figures: {out / 'figures'}   metrics: {out / 'metrics.csv'}   predictions: {out / 'predictions'}")
    print(f"recon demo: done in {time.perf_counter() - started:.0f} s")
    finite = [row[2]["SSIM"] for _, table in tables for row in table]
    return 0 if np.isfinite(finite).all() else 1
