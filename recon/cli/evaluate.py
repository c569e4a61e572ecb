"""``recon evaluate``: SSIM, PSNR and NMSE of predictions against targets, per volume and on average.

Targets are fastMRI files (``reconstruction_rss``, or ``reconstruction_esc`` for single-coil, or a ``reconstruction``)
and predictions are submission files (``reconstruction``), matched by file name. The metrics are fastMRI's
(``fastmri/evaluate.py``, implemented in :mod:`recon.metrics`): per volume, with the data range ``max`` of the
target volume; the table's last row is the mean over volumes (``+/-`` one sample standard deviation). Unlike
fastMRI's script, shapes must match exactly (no square crop): a mismatch is reported, not silently cropped.

With several ``--predictions`` folders (one per method or setting) the table has one row per folder: the mean over
its volumes and the method / mask read from its provenance. A pair that cannot be scored costs one error line naming
the file; the others are still scored. The exit status is 1
when no pair could be scored, else 0 (with ``--strict``: 3 when any file had a problem).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from recon.cli._common import CLIError, check_writable_file, error_line

HELP = "SSIM / PSNR / NMSE of predictions against targets (fastMRI definitions)"
DESCRIPTION = __doc__.split("\n\n", 1)[1].replace("``", "").replace(":mod:`recon.metrics`", "recon.metrics")
EXAMPLES = """\
  recon evaluate --targets data/ --predictions out/cirim
  recon evaluate --targets data/ --predictions out/cirim --csv cirim.csv
  # several methods: one row per folder (mean over volumes), settings from each folder's provenance
  recon evaluate --targets data/ --predictions out/zf out/cs out/cirim --csv all.csv
"""

TARGET_KEYS = ("reconstruction_rss", "reconstruction_esc", "reconstruction")
PREDICTION_KEY = "reconstruction"
METRICS = ("SSIM", "PSNR", "NMSE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--targets", type=Path, required=True, help="folder of reference files (or one file)")
    parser.add_argument(
        "--predictions",
        type=Path,
        nargs="+",
        action="extend",
        required=True,
        help="folder(s) of submission files (or files); several (after one --predictions or repeated) give one table "
        "with a row per folder",
    )
    parser.add_argument("--csv", type=Path, help="also write the per-volume table (and the mean) to this CSV file")
    parser.add_argument("--strict", action="store_true", help="exit with status 3 when any file had a problem")


class PairError(ValueError):
    """A target / prediction pair that cannot be scored; the message names the file."""


@dataclass
class Evaluation:
    """Per-volume scores (``name -> {"SSIM", "PSNR", "NMSE", "slices"}``) and the problems met."""

    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def mean(self) -> dict[str, tuple[float, float]]:
        """``metric -> (mean, sample std)`` over volumes (std ``nan`` for one volume)."""
        out = {}
        for name in METRICS:
            values = np.array([row[name] for row in self.rows.values()], dtype=np.float64)
            out[name] = (
                float(values.mean()) if values.size else math.nan,
                float(values.std(ddof=1)) if values.size > 1 else math.nan,
            )
        return out


def _h5_files(path: Path, role: str) -> dict[str, Path]:
    if path.is_file():
        return {path.name: path}
    if not path.is_dir():
        raise CLIError(f"{path}: {role} folder not found")
    files = {p.name: p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in (".h5", ".hdf5")}
    if not files:
        raise CLIError(f"{path}: no .h5 / .hdf5 files in the {role} folder")
    return files


def read_image_volume(path: Path, keys: tuple[str, ...]) -> np.ndarray:
    """The first of ``keys`` found in ``path``, checked to be a finite real ``(slices, h, w)`` array.

    Raises:
        PairError: Naming the file and what is wrong.
    """
    if not path.is_file():
        raise PairError(f"{path}: no such file")
    try:
        hf = h5py.File(path, "r")
    except OSError as err:
        raise PairError(f"{path}: not a readable HDF5 file ({err})") from None
    with hf:
        key = next((k for k in keys if k in hf), None)
        if key is None:
            raise PairError(f"{path}: no dataset {' / '.join(keys)} (file has {sorted(hf.keys())})")
        dset = hf[key]
        if not isinstance(dset, h5py.Dataset) or dset.ndim != 3 or dset.dtype.kind not in "fiu":
            shape = getattr(dset, "shape", None)
            dtype = getattr(dset, "dtype", None)
            raise PairError(f"{path} [{key}]: expected real (slices, h, w) data, got {dtype} of shape {shape}")
        try:
            data = np.asarray(dset[()], dtype=np.float64)
        except Exception as err:  # truncated data
            raise PairError(f"{path} [{key}]: could not read data ({type(err).__name__}: {err})") from None
    if not np.all(np.isfinite(data)):
        raise PairError(f"{path} [{key}]: contains NaN or Inf values")
    return data


def evaluate_dirs(
    targets: Path, predictions: Path, report: Callable[[str], None] | None = None, progress: bool = True
) -> Evaluation:
    """Score every prediction that has a target of the same name.

    Args:
        targets: Folder (or file) of references.
        predictions: Folder (or file) of submission files.
        report: Called with each problem line (default: printed on stderr).
        progress: Show a progress bar.

    Returns:
        The scores and the problems.
    """
    from recon.cli._common import progress as bar
    from recon.metrics import nmse, psnr, ssim

    report = report or (lambda line: error_line("evaluate", line))
    target_files = _h5_files(targets, "targets")
    prediction_files = _h5_files(predictions, "predictions")
    result = Evaluation()

    def problem(message: str) -> None:
        result.problems.append(message)
        report(message)

    names = sorted(prediction_files)
    for name in names:
        if name not in target_files:
            problem(f"{prediction_files[name]}: no target of the same name in {targets}")
    for name in sorted(set(target_files) - set(prediction_files)):
        problem(f"{target_files[name]}: no prediction of the same name in {predictions}")
    pairs = [name for name in names if name in target_files]
    for name in bar(pairs, desc="evaluate", total=len(pairs)) if progress else pairs:
        try:
            gt = read_image_volume(target_files[name], TARGET_KEYS)
            pred = read_image_volume(prediction_files[name], (PREDICTION_KEY,))
            if gt.shape != pred.shape:
                raise PairError(
                    f"{prediction_files[name]}: prediction shape {pred.shape} differs from the target's {gt.shape} "
                    f"({target_files[name]})"
                )
            if gt.max() <= 0:
                raise PairError(f"{target_files[name]}: the target is all zeros; PSNR / SSIM are undefined")
        except PairError as err:
            problem(str(err))
            continue
        result.rows[name] = {
            "SSIM": ssim(gt, pred),
            "PSNR": psnr(gt, pred),
            "NMSE": nmse(gt, pred),
            "slices": float(gt.shape[0]),
        }
    return result


def format_table(result: Evaluation, title: str | None = None) -> str:
    """A fixed-width table: one row per volume, then the mean +/- std."""
    width = max([len("mean"), len("volume"), *(len(n) for n in result.rows)])
    lines = [title] if title else []
    lines.append(f"{'volume':<{width}}  {'slices':>6}  {'SSIM':>7}  {'PSNR':>7}  {'NMSE':>8}")
    lines.append("-" * len(lines[-1]))
    for name, row in result.rows.items():
        lines.append(
            f"{name:<{width}}  {int(row['slices']):>6}  {row['SSIM']:>7.4f}  {row['PSNR']:>7.2f}  {row['NMSE']:>8.5f}"
        )
    lines.append("-" * len(lines[-1]))
    mean = result.mean()
    slices = int(sum(row["slices"] for row in result.rows.values()))
    lines.append(
        f"{'mean':<{width}}  {slices:>6}  {mean['SSIM'][0]:>7.4f}  {mean['PSNR'][0]:>7.2f}  {mean['NMSE'][0]:>8.5f}"
    )
    if len(result.rows) > 1:
        lines.append(
            f"{'+/- std':<{width}}  {'':>6}  {mean['SSIM'][1]:>7.4f}  {mean['PSNR'][1]:>7.2f}  {mean['NMSE'][1]:>8.5f}"
        )
    return "\n".join(lines)


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    """Write ``rows`` (dicts with the same keys) to ``path`` atomically.

    Raises:
        CLIError: When the file cannot be written.
    """

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    from recvision.utils.atomic import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError as err:
        raise CLIError(f"{path}: cannot write the CSV file ({err.strerror or err})") from None


def csv_rows(result: Evaluation, **extra: object) -> list[dict[str, object]]:
    """Per-volume rows plus a ``mean`` row, each with the ``extra`` columns first."""
    rows: list[dict[str, object]] = []
    for name, row in result.rows.items():
        rows.append({**extra, "volume": name, "slices": int(row["slices"]), **{m: row[m] for m in METRICS}})
    mean = result.mean()
    slices = int(sum(row["slices"] for row in result.rows.values()))
    rows.append({**extra, "volume": "mean", "slices": slices, **{m: mean[m][0] for m in METRICS}})
    return rows


def settings_label(predictions: Path) -> str:
    """``"cirim 3f2a9c1d, equispaced 8x"``: method, the first 8 hex digits of its weights' sha256 (so two sets of
    weights of one model are told apart) and undersampling, from the provenance of the first prediction in a folder
    (``"-"`` when it has none: written by an older recon or another tool)."""
    from recon.provenance import read_provenance

    files = [predictions] if predictions.is_file() else sorted(predictions.glob("*.h5"))
    try:
        record = read_provenance(files[0]) if files else None
    except (OSError, ValueError):
        record = None
    if record is None:
        return "-"
    mask = record.get("mask")
    weights = record.get("weights_sha256")
    method = f"{record.get('method')} {weights[:8]}" if isinstance(weights, str) and weights else record.get("method")
    if mask == "file":
        return f"{method}, file mask"
    accel = record.get("acceleration")
    accel_text = f"{accel:g}x" if isinstance(accel, int | float) else f"{accel}x"
    extra = f" lambda {record['cs_lambda']:g}" if "cs_lambda" in record else ""
    return f"{method}{extra}, {mask} {accel_text}"


def format_comparison(results: dict[str, tuple[str, Evaluation]]) -> str:
    """One row per prediction folder: volumes, slices and the mean SSIM / PSNR / NMSE over volumes."""
    width = max([len("predictions"), *(len(name) for name in results)])
    swidth = max([len("settings"), *(len(settings) for settings, _ in results.values())])
    header = (
        f"{'predictions':<{width}}  {'settings':<{swidth}}  {'volumes':>7}  {'slices':>6}  "
        f"{'SSIM':>7}  {'PSNR':>7}  {'NMSE':>8}"
    )
    lines = [header, "-" * len(header)]
    for name, (settings, result) in results.items():
        mean = result.mean()
        slices = int(sum(row["slices"] for row in result.rows.values()))
        lines.append(
            f"{name:<{width}}  {settings:<{swidth}}  {len(result.rows):>7}  {slices:>6}  {mean['SSIM'][0]:>7.4f}  "
            f"{mean['PSNR'][0]:>7.2f}  {mean['NMSE'][0]:>8.5f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.csv is not None:  # before scoring everything, not after
        check_writable_file(args.csv, "the CSV file")
    folders = list(dict.fromkeys(args.predictions))
    if len(folders) == 1:
        result = evaluate_dirs(args.targets, folders[0])
        if not result.rows:
            raise CLIError(f"nothing to evaluate: no prediction in {folders[0]} could be scored")
        print(format_table(result))
        sys.stdout.flush()
        if args.csv is not None:
            write_csv(csv_rows(result), args.csv)
            print(f"wrote {args.csv}")
        return 3 if result.problems and args.strict else 0
    results: dict[str, tuple[str, Evaluation]] = {}
    problems = False
    for folder in folders:
        result = evaluate_dirs(args.targets, folder)
        problems = problems or bool(result.problems)
        if not result.rows:
            error_line("evaluate", f"{folder}: no prediction could be scored; left out of the table")
            problems = True
            continue
        results[str(folder)] = (settings_label(folder), result)
    if not results:
        raise CLIError(f"nothing to evaluate: no prediction in {', '.join(map(str, folders))} could be scored")
    print(format_comparison(results))
    sys.stdout.flush()
    if args.csv is not None:
        rows = [
            row for name, (settings, r) in results.items() for row in csv_rows(r, predictions=name, settings=settings)
        ]
        write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    return 3 if problems and args.strict else 0
