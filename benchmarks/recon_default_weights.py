"""Data and evaluation of the shipped default weights (``recon/weights``): the table of the model card.

Two steps, both deterministic::

    python benchmarks/recon_default_weights.py data --out data/recon_weights     # train, train_ft, val, test
    recon train --config configs/recon/cirim.yaml --data data/recon_weights/train \\
        --val data/recon_weights/val --out runs/cirim --threads 1                 # likewise rim, recurrentvarnet
    python benchmarks/recon_default_weights.py evaluate --data data/recon_weights/test

``data`` writes synthetic fully sampled multi-coil volumes (128 x 128, 8 coils, noise 0.5 % of the maximum;
:func:`recon.data.synthetic.write_synthetic_dataset`) from four sources: random ellipsoid phantoms, Shepp-Logan,
axial slices of the MNI152 T1 template (nilearn) and of nibabel's example EPI. The train, val and test folders use
different seeds (0, 50, 100), so the test volumes are held out: new phantoms, rotations, slice positions, phases
and coil placements.

``evaluate`` undersamples every test slice with both mask families the models were trained with (equispaced and
random, fastMRI's ``equispaced_fraction`` / ``random``; centre fraction 0.08 at 4x and 0.04 at 8x; seeded per file
and slice) and reconstructs it with zero-filled RSS, TV-SENSE and wavelet-SENSE (compressed sensing,
:mod:`recon.baselines`, 100 iterations, ESPIRiT coil maps, their default lambda or ``--tune-cs`` to pick the best
of a small grid on the val folder) and the three default models (ACS coil maps, as trained). Every method is scored
against the same target, the file's ``reconstruction_rss`` (RSS of the fully sampled k-space: the target the models
are trained towards), over the same recon matrix, with fastMRI's volume metrics (:mod:`recon.metrics`: SSIM and
PSNR with the volume maximum as data range, NMSE); numbers are means over volumes and both mask families.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.models import MODEL_NAMES

SIZE = (128, 128)
COILS = 8
# (source, volumes, slices) per split; seeds make the splits disjoint draws
SPLITS: dict[str, tuple[int, list[tuple[str, int, int]]]] = {
    "train": (0, [("ellipses", 10, 8), ("shepp_logan", 3, 8), ("mni", 6, 8), ("epi", 6, 8)]),
    "val": (50, [("ellipses", 1, 4), ("shepp_logan", 1, 4), ("mni", 1, 4), ("epi", 1, 4)]),
    "test": (100, [("ellipses", 2, 4), ("shepp_logan", 1, 4), ("mni", 2, 4), ("epi", 2, 4)]),
    # the fine-tuning set: train plus 6 more Shepp-Logan volumes (the piecewise-constant images TV-SENSE favours);
    # same seed and file prefix, so its first 25 volumes are train's
    "train_ft": (0, [("ellipses", 10, 8), ("shepp_logan", 9, 8), ("mni", 6, 8), ("epi", 6, 8)]),
}
PREFIXES = {"train_ft": "train"}
# the real-anatomy held-out split: sources no training corpus uses (recon.data.sources.HELDOUT_SOURCES), each written
# at two noise levels from the same seed, so both levels hold the same objects, coils and noise pattern (scaled)
REAL_SEED = 500
REAL_PARTS = [("epi_heldout", 2, 4, (128, 128)), ("abdomen", 1, 2, (128, 128)), ("mr_small", 1, 2, (72, 72))]
REAL_NOISE = {"low": 0.001, "realistic": 0.02}
SETTINGS = [(4, 0.08), (8, 0.04)]
MASK_TYPES = ("equispaced_fraction", "random")
MODELS = MODEL_NAMES  # the recon models, each with shipped default weights
CS_GRID = {"tv": [3e-3, 1e-2, 3e-2, 1e-1], "wavelet": [3e-4, 1e-3, 3e-3, 1e-2]}


def make_data(out: Path, splits: tuple[str, ...] = tuple(SPLITS)) -> None:
    """Write the train / val / test folders and train_ft (train with more Shepp-Logan volumes, for fine-tuning)."""
    from recon.data.synthetic import write_synthetic_dataset

    for split in splits:
        seed, parts = SPLITS[split]
        for source, volumes, slices in parts:
            write_synthetic_dataset(
                out / split,
                volumes,
                slices,
                SIZE,
                COILS,
                source,
                seed,
                prefix=PREFIXES.get(split, split),
                noise_std=0.005,
            )
        print(f"{out / split}: {len(list((out / split).glob('*.h5')))} volumes")


def make_real_data(out: Path) -> None:
    """Write the real-anatomy held-out split: ``out/low`` and ``out/realistic`` (noise 0.1 % and 2 % of the max)."""
    from recon.data.synthetic import write_synthetic_dataset

    for level, noise in REAL_NOISE.items():
        for source, volumes, slices, size in REAL_PARTS:
            write_synthetic_dataset(
                out / level, volumes, slices, size, COILS, source, REAL_SEED, prefix="real", noise_std=noise
            )
        print(f"{out / level}: {len(list((out / level).glob('*.h5')))} volumes")


def air_mask(target: torch.Tensor, low_noise_target: torch.Tensor | None = None) -> torch.Tensor:
    """Pixels of air: far (4 px) from anything above 3 % of the volume maximum in the (low-noise) target.

    Args:
        target: magnitude volume ``[S, h, w]``.
        low_noise_target: the same objects at low noise (the held-out split's ``low`` level), to draw the outline
            from when ``target`` is noisy; default ``target`` itself.

    Returns:
        bool ``[S, h, w]``.
    """
    from scipy import ndimage

    ref = (target if low_noise_target is None else low_noise_target).numpy()
    smooth = ndimage.gaussian_filter(ref, sigma=(0, 1.5, 1.5))
    inside = ndimage.binary_dilation(smooth > 0.03 * ref.max(), iterations=4, structure=np.ones((1, 3, 3)))
    return torch.from_numpy(~inside)


def export(run_dir: Path, name: str, command: str, out_dir: Path) -> None:
    """Copy a run's last weights into ``out_dir/<name>.safetensors`` and write ``<name>.json`` (atomically)."""
    import os
    import shutil

    from recon.config import config_from_dict, config_to_dict, load_config

    config = load_config(run_dir / "config.yaml")
    if config.model != name:
        raise SystemExit(f"{run_dir}: holds a {config.model!r} run, not {name!r}")
    meta = json.loads((run_dir / "last" / "config.json").read_text())
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    vals = [r for r in records if "val_ssim" in r]
    resolved = config_to_dict(config)
    # store the overrides only (fields at their default are left out, so later fields keep their defaults)
    defaults = config_to_dict(config_from_dict({"model": {"name": name}}))["model"]
    overrides = {k: v for k, v in resolved["model"].items() if k != "name" and v != defaults[k]}
    out = {
        "model": name,
        "model_config": overrides,
        "data": resolved["data"],
        "train": resolved["train"],
        "step": meta["step"],
        "val": vals[-1] if vals else None,
        "command": command,
    }
    for src, dst, text in (
        (run_dir / "last" / "model.safetensors", out_dir / f"{name}.safetensors", None),
        (None, out_dir / f"{name}.json", json.dumps(out, indent=2) + "\n"),
    ):
        tmp = dst.with_name(f".{dst.name}.tmp")
        if src is not None:
            shutil.copyfile(src, tmp)
        else:
            tmp.write_text(text)
        os.replace(tmp, dst)
    print(f"{out_dir / name}.*: step {meta['step']}, last validation {out['val']}")


def _undersample(path: Path, kspace: torch.Tensor, acc: int, cf: float, mask_type: str, s: int) -> Any:
    from recon.data.subsample import apply_mask, create_mask_for_mask_type

    func = create_mask_for_mask_type(mask_type, [cf], [acc])
    seed = zlib.crc32(f"{path.name}/{s}/{mask_type}/{acc}".encode())
    return apply_mask(kspace, func, seed=seed)


def _cs(
    kind: str, masked: torch.Tensor, mask: torch.Tensor, num_low: int, lam: float | None, maps: str = "acs"
) -> torch.Tensor:
    from recon.baselines import tv_sense, wavelet_sense
    from recon.ops.coils import estimate_sens_maps

    # ESPIRiT's 6x6 kernel needs at least 6 calibration columns (8x with centre fraction 0.04 has 5 at W = 128)
    options = {"kernel_size": min(6, num_low)} if maps == "espirit" else {}
    sens = estimate_sens_maps(masked, num_low, method=maps, **options)
    solver = tv_sense if kind == "tv" else wavelet_sense
    kwargs = {} if lam is None else {"lam": lam}
    return solver(masked, sens, mask, **kwargs).abs()


METHODS = ("zero-filled", "tv", "tv-floor", "wavelet", *MODELS)
LABELS = {"tv": "TV-SENSE (CS)", "tv-floor": "TV-SENSE (CS) + noise floor", "wavelet": "wavelet-SENSE (CS)"}


def _methods(
    names: list[str], lams: dict[tuple[str, int], float], precisions: tuple[str, ...] = ("fp32",)
) -> dict[str, Any]:
    """``{label: f(masked_kspace, mask, num_low, acceleration) -> magnitude [H, W]}`` for the chosen methods; the
    models once per precision (labelled ``"name (bf16)"`` for bf16, :mod:`recon.inference`)."""
    from recon.baselines import zero_filled_rss
    from recon.ops.noise import add_noise_floor, rss_noise_floor
    from recon.training.data import reconstruct
    from recon.weights import default_config, load_default_model

    methods: dict[str, Any] = {}
    for name in names:
        if name == "zero-filled":
            methods[name] = lambda k, m, n, a: zero_filled_rss(k)
        elif name in ("tv", "wavelet"):
            methods[LABELS[name]] = lambda k, m, n, a, kind=name: _cs(kind, k, m, n, lams.get((kind, a)))
        elif name == "tv-floor":  # the RSS noise floor the models with DataConfig.noise_floor report, for CS too
            methods[LABELS[name]] = lambda k, m, n, a: add_noise_floor(
                _cs("tv", k, m, n, lams.get(("tv", a)))[None], rss_noise_floor(k, m)
            )[0]
        else:
            for precision in precisions:
                # a model per precision: bf16 puts the conv weights in channels-last
                model, data = load_default_model(name), default_config(name).data
                label = name if precision == "fp32" else f"{name} ({precision})"
                methods[label] = lambda k, m, n, a, model=model, data=data, p=precision: reconstruct(
                    model, k, m, data, n, precision=p
                )
    return methods


def evaluate(
    folder: Path,
    methods: dict[str, Any],
    max_volumes: int | None = None,
    slice_stride: int = 1,
    mask_types: tuple[str, ...] = MASK_TYPES,
    air_from: Path | None = None,
) -> dict[str, dict[int, list]]:
    """``{method: {acceleration: [(ssim, psnr, nmse, seconds, air error) per volume and mask type]}}``.

    The air error is the mean absolute error over :func:`air_mask` relative to the volume maximum (NaN where a
    volume has no air); ``air_from`` is the folder of the same volumes at low noise, to find the air in.
    """
    from recon.data.mri_data import list_volume_files, read_volume
    from recon.metrics import nmse, psnr, ssim
    from recon.training.losses import center_crop

    results: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    files = list_volume_files(folder)[:max_volumes]
    for path in files:
        volume = read_volume(path)
        target, kspace = volume.target[::slice_stride], volume.kspace[::slice_stride]
        low = read_volume(air_from / path.name).target[::slice_stride] if air_from is not None else None
        air = air_mask(target, low)
        for acc, cf in SETTINGS:
            for mask_type in mask_types:
                inputs = [_undersample(path, k, acc, cf, mask_type, s) for s, k in enumerate(kspace)]
                for name, method in methods.items():
                    start = time.perf_counter()
                    pred = torch.stack([method(k, m, n, acc) for k, m, n in inputs]).float()
                    seconds = (time.perf_counter() - start) / len(inputs)
                    pred = center_crop(pred, tuple(target.shape[-2:]))
                    air_error = float((pred - target).abs()[air].mean() / target.max()) if air.any() else float("nan")
                    scores = (ssim(target, pred), psnr(target, pred), nmse(target, pred), seconds, air_error)
                    results[name][acc].append(scores)
        print(f"  {path.name} done", flush=True)
    return results


def tune_cs(
    folder: Path,
    slice_stride: int,
    kinds: tuple[str, ...] = ("tv", "wavelet"),
    mask_types: tuple[str, ...] = MASK_TYPES,
) -> dict[tuple[str, int], float]:
    """``{(method, acceleration): lambda}`` with the best mean SSIM on every ``slice_stride``-th slice of ``folder``."""
    best = {}
    for kind in kinds:
        grid = CS_GRID[kind]
        methods = {lam: (lambda k, m, n, a, lam=lam, kind=kind: _cs(kind, k, m, n, lam)) for lam in grid}
        res = evaluate(folder, methods, slice_stride=slice_stride, mask_types=mask_types)
        for acc, _ in SETTINGS:
            means = {lam: float(np.mean([r[0] for r in res[lam][acc]])) for lam in grid}
            best[(kind, acc)] = max(means, key=means.get)
            print(f"CS {kind} {acc}x: mean val SSIM per lambda {means} -> {best[(kind, acc)]}", flush=True)
    return best


def table(results: dict[str, dict[int, list]], air: bool = False) -> str:
    """Markdown table: rows methods, columns SSIM / PSNR / NMSE (and the air error, % of the maximum) at each
    acceleration, plus seconds per slice."""
    per_acc = 4 if air else 3
    air_head = " | {a}x air error (%)" if air else ""
    head = "| method | " + " | ".join(
        f"{a}x SSIM | {a}x PSNR (dB) | {a}x NMSE" + air_head.format(a=a) for a, _ in SETTINGS
    )
    head += " | s / slice |\n|---|" + "---:|" * (per_acc * len(SETTINGS) + 1) + "\n"
    rows = []
    for name, by_acc in results.items():
        cells = []
        for acc, _ in SETTINGS:
            arr = np.array(by_acc[acc], dtype=np.float64)
            cells += [f"{arr[:, 0].mean():.4f}", f"{arr[:, 1].mean():.2f}", f"{arr[:, 2].mean():.4f}"]
            if air:
                cells.append(f"{100 * np.nanmean(arr[:, 4]):.2f}" if arr.shape[1] > 4 else "-")
        seconds = np.mean([r[3] for acc in by_acc for r in by_acc[acc]])
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {seconds:.2f} |")
    return head + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_data = sub.add_parser("data", help="write the train / val / test folders")
    p_data.add_argument("--out", type=Path, default=Path("data/recon_weights"))
    p_data.add_argument("--splits", nargs="+", choices=list(SPLITS), default=list(SPLITS), help="(all)")
    p_real = sub.add_parser("real-data", help="write the real-anatomy held-out split (low and realistic noise)")
    p_real.add_argument("--out", type=Path, default=Path("data/recon_real"))
    p_exp = sub.add_parser("export", help="copy a run's last weights into recon/weights/<name>.*")
    p_exp.add_argument("--run", type=Path, required=True)
    p_exp.add_argument("--name", choices=MODELS, required=True)
    p_exp.add_argument(
        "--command", dest="command_line", required=True, help="the training command, recorded in the JSON"
    )
    p_exp.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "recon" / "weights")
    p_eval = sub.add_parser("evaluate", help="measure the table")
    p_eval.add_argument("--data", type=Path, default=Path("data/recon_weights/test"))
    p_eval.add_argument("--tune-cs", type=Path, help="val folder: pick each CS lambda from a grid on it first")
    p_eval.add_argument("--tune-stride", type=int, default=4, help="tune on every n-th val slice (%(default)s)")
    p_eval.add_argument("--slice-stride", type=int, default=1, help="evaluate every n-th slice (%(default)s)")
    p_eval.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    p_eval.add_argument("--threads", type=int, default=1)
    p_eval.add_argument("--json", type=Path, help="also write the raw per-volume numbers here")
    p_eval.add_argument(
        "--mask-types", default=",".join(MASK_TYPES), help="comma-separated mask families (%(default)s)"
    )
    p_eval.add_argument(
        "--air-from", type=Path, help="folder of the same volumes at low noise: report the error in the air region"
    )
    p_eval.add_argument("--cs-kinds", default="tv,wavelet", help="CS methods to tune with --tune-cs (%(default)s)")
    p_eval.add_argument(
        "--precision", default="fp32", help="comma-separated precisions the models run in, fp32 / bf16 (%(default)s)"
    )
    p_table = sub.add_parser("table", help="print one table from the --json files of several evaluate runs")
    p_table.add_argument("json_files", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "data":
        make_data(args.out, tuple(args.splits))
        return
    if args.command == "real-data":
        make_real_data(args.out)
        return
    if args.command == "export":
        export(args.run, args.name, args.command_line, args.out)
        return
    if args.command == "table":
        merged: dict[str, Any] = {}
        for path in args.json_files:
            run = json.loads(path.read_text())
            if run.get("lambdas") is not None:
                print(f"{path}: CS lambdas {run['lambdas']}")
            merged.update({k: {int(a): v for a, v in by.items()} for k, by in run["results"].items()})
        print(table(merged))
        return
    torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
    mask_types = tuple(m.strip() for m in args.mask_types.split(",") if m.strip())
    from recon.config import LINE_MASKS

    bad_masks = sorted(set(mask_types) - set(LINE_MASKS))
    if not mask_types or bad_masks:
        raise SystemExit(f"--mask-types: unknown {bad_masks or mask_types}; choose line masks from {list(LINE_MASKS)}")
    for flag, folder in (("--data", args.data), ("--air-from", args.air_from), ("--tune-cs", args.tune_cs)):
        if folder is not None and not folder.is_dir():
            raise SystemExit(f"{flag}: {folder} is not a folder of .h5 files")
    if args.air_from is not None:
        missing = sorted(p.name for p in args.data.glob("*.h5") if not (args.air_from / p.name).is_file())
        if missing:
            raise SystemExit(
                f"--air-from: {args.air_from} must hold the volumes of --data at low noise; {missing[0]} is missing"
            )
    precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip())
    if not precisions or sorted(set(precisions) - {"fp32", "bf16"}):
        raise SystemExit(f"--precision: expected a comma-separated subset of fp32, bf16; got {args.precision!r}")
    kinds = tuple(k for k in args.cs_kinds.split(",") if k in names)
    tune = args.tune_cs is not None and bool(kinds)
    lams = tune_cs(args.tune_cs, args.tune_stride, kinds, mask_types) if tune else {}
    methods = _methods(names, lams, precisions)
    results = evaluate(
        args.data, methods, slice_stride=args.slice_stride, mask_types=mask_types, air_from=args.air_from
    )
    chosen = None  # no CS method ran: no lambda to report
    if any(name in LABELS for name in names):
        chosen = {f"{kind} {acc}x": lam for (kind, acc), lam in lams.items()} or "recon.baselines defaults"
        print(f"\nCS lambdas (relative to max |A^H y|): {chosen}")
    print()
    print(table(results, air=args.air_from is not None))
    if args.json is not None:
        args.json.write_text(json.dumps({"lambdas": chosen, "results": results}, indent=1))


if __name__ == "__main__":
    main()
