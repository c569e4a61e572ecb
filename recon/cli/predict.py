"""``recon predict``: reconstruct fastMRI-style files into fastMRI submission files.

For each input file ``NAME.h5`` the output is ``OUTPUT_DIR/NAME.h5`` holding a float32 ``reconstruction``
``(slices, h, w)`` cropped to the recon matrix of the file's header (the leaderboard format; see
:mod:`recon.data.writer`). Fully sampled inputs are undersampled retrospectively with a mask seeded by
``(--seed, file name)``; inputs that store a ``mask`` (fastMRI test files) are used as they are.

Batches are resumable and shardable: outputs are written atomically (temporary file + rename), a rerun skips every
output that already exists, and under ``torchrun --nproc_per_node N`` (``RANK`` / ``WORLD_SIZE`` in the
environment) each process takes every N-th file of the sorted list; no process group is needed.

A bad file costs one error line naming it; the others are still processed. The exit status is 1 when nothing could
be done (every file failed), else 0 (with ``--strict``: 3 when any file failed). A partial failure does not fail
the process by default because ``torchrun`` stops every rank when one exits non-zero.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from recon.cli._common import (
    CLIError,
    add_mask_arguments,
    check_writable_dir,
    error_line,
    list_inputs,
    load_checkpoint_model,
    load_default_model,
    mask_func_from_args,
    progress,
    resolve_device,
    shard,
    shard_info,
)

HELP = "reconstruct undersampled files with a model or a classical baseline"
DESCRIPTION = __doc__.split("\n\n", 1)[1].replace("``", "").replace(":mod:`recon.data.writer`", "recon.data.writer")
EXAMPLES = """\
  # default CIRIM weights, 4x equispaced retrospective undersampling of every file in data/
  recon predict data/ out/cirim --model cirim
  # 8x Poisson-disc 2-D mask, compressed sensing (TV), with PNG figures in out/cs/figures/
  recon predict data/ out/cs --model cs --mask poisson --acceleration 8 --center-fraction 0.04 --figures
  # your own weights (a folder written by `recon train`)
  recon predict data/file1.h5 out/ --model rim --checkpoint runs/rim/last
  # 4 processes, each taking a quarter of the files; rerun the same command to resume
  torchrun --nproc_per_node 4 -m recon predict data/ out/ --model recurrentvarnet
"""

EXIT_OK, EXIT_NOTHING_DONE, EXIT_SOME_FAILED = 0, 1, 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from recon.inference import BASELINES, CS_METHODS, MODEL_NAMES

    parser.add_argument("input", type=Path, help="a fastMRI-style .h5 file, or a folder of them")
    parser.add_argument("output_dir", type=Path, help="folder for the submission files (created)")
    parser.add_argument(
        "--model", choices=(*MODEL_NAMES, *BASELINES), default="cirim", help="method (%(default)s); cs = CS SENSE"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="weights: a `recon train` checkpoint folder, a .safetensors file (config.json beside it) or a "
        "weights-only .pt; default: the shipped weights",
    )
    parser.add_argument(
        "--cs-method",
        choices=CS_METHODS,
        default=CS_METHODS[0],
        help="CS regulariser (%(default)s: total variation, better than wavelets on the synthetic phantoms)",
    )
    add_mask_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=4, help="slices per forward pass (%(default)s)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--figures", action="store_true", help="also write OUTPUT_DIR/figures/NAME.png")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    parser.add_argument("--strict", action="store_true", help="exit with status 3 when any file failed")


@dataclass
class PredictSummary:
    """What :func:`predict_files` did, by file."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    slices: int = 0


def _finished(path: Path) -> bool:
    """An output written by a previous run (atomic writes: it exists only once complete)."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as hf:
            return "reconstruction" in hf and hf["reconstruction"].ndim == 3
    except Exception:  # a foreign or damaged file under our name: redo it
        return False


def _remove_stale_temporaries(out_dir: Path, name: str) -> None:
    """Temporary files a killed run of *this* file left behind (other ranks' files are not touched)."""
    for tmp in out_dir.glob(f".{name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def predict_files(
    files: list[Path],
    out_dir: Path,
    method: object,
    mask_func: object,
    seed: int = 0,
    cs_method: str = "tv",
    batch_size: int = 4,
    device: str = "cpu",
    figures: bool = False,
    overwrite: bool = False,
    label: str = "reconstruction",
    report: Callable[[str], None] | None = None,
    preprocessing: object = None,
) -> PredictSummary:
    """Reconstruct ``files`` into ``out_dir`` (skipping finished outputs), one error line per bad file.

    Args:
        files: Input files (this process's share).
        out_dir: Output folder (must exist and be writable).
        method: A model (:mod:`recon.models`), ``"zero-filled"`` or ``"cs"``.
        mask_func: Retrospective mask function for fully sampled files.
        seed: Mask seed, combined with each file name.
        cs_method: ``"tv"`` or ``"wavelet"`` for ``"cs"``.
        batch_size: Slices per call.
        device: Torch device.
        figures: Write ``out_dir/figures/NAME.png`` (middle slice).
        overwrite: Redo finished outputs.
        label: Name of the method in figures.
        report: Called with each error line (default: printed on stderr).
        preprocessing: :class:`recon.inference.Preprocessing` of the model (default ACS maps, max scaling).

    Returns:
        The summary.
    """
    from torch import nn

    from recon.data.keys import FastMRIKey
    from recon.data.mri_data import FastMRIDataError
    from recon.data.writer import save_reconstructions
    from recon.inference import load_volume, make_reconstructor, reconstruct_volume, zero_filled_volume

    report = report or (lambda line: error_line("predict", line))
    reconstructor = make_reconstructor(method, cs_method)  # type: ignore[arg-type]
    is_model = isinstance(method, nn.Module)
    summary = PredictSummary()
    for path in progress(files, desc="files", total=len(files), leave=True):
        target = out_dir / path.name
        if not overwrite and _finished(target):
            summary.skipped.append(path)
            continue
        _remove_stale_temporaries(out_dir, path.name)
        try:
            volume = load_volume(path, mask_func, seed)  # type: ignore[arg-type]
            if is_model and not volume.multicoil:
                raise FastMRIDataError(
                    path,
                    FastMRIKey.KSPACE,
                    f"single-coil k-space {tuple(volume.info.kspace_shape)}; the {label} model needs multi-coil "
                    "k-space (slices, coils, H, W) (the zero-filled and cs baselines accept single-coil files)",
                )
            start = time.perf_counter()
            recon = reconstruct_volume(
                volume,
                reconstructor,
                batch_size=batch_size,
                device=device,
                progress=functools.partial(progress, desc=path.name, total=-(-volume.info.num_slices // batch_size)),
                preprocessing=preprocessing,  # type: ignore[arg-type]
            )
            summary.seconds += time.perf_counter() - start
            summary.slices += volume.info.num_slices
            save_reconstructions({path.name: recon}, out_dir)
            summary.written.append(path)
            if figures:
                _figure(volume, recon, zero_filled_volume(volume), out_dir / "figures" / f"{path.stem}.png", label)
        except (FastMRIDataError, ValueError, OSError, RuntimeError, IndexError) as err:
            message = str(err) if str(path) in str(err) else f"{path}: {err}"
            summary.failed.append((path, message))
            report(message)
    return summary


def _figure(volume: object, recon: np.ndarray, zero_filled: np.ndarray, path: Path, label: str) -> None:
    from recon.figures import comparison_figure

    index = recon.shape[0] // 2
    target = volume.target  # type: ignore[attr-defined]
    target_np = None if target is None or tuple(target.shape) != recon.shape else target.numpy()
    maxval = None if target_np is None else float(target_np.max())
    accel = float(volume.mask.numel() / max(float(volume.mask.sum()), 1.0))  # type: ignore[attr-defined]
    title = f"{volume.info.fname}  slice {index}  ({accel:.1f}x)"  # type: ignore[attr-defined]
    comparison_figure(
        None if target_np is None else target_np[index],
        {"zero-filled": zero_filled[index], label: recon[index]},
        path,
        title=title,
        maxval=maxval,
    )


def resolve_method(model: str, checkpoint: Path | None) -> tuple[object, object]:
    """``(method, preprocessing)`` for ``--model`` / ``--checkpoint``: a loaded model and the pre-processing it was
    trained with, or the baseline's name and ``None``."""
    from recon.inference import BASELINES

    if model in BASELINES:
        if checkpoint is not None:
            raise CLIError(f"--checkpoint does not apply to --model {model}")
        return model, None
    if checkpoint is not None:
        return load_checkpoint_model(checkpoint, expected=model)
    return load_default_model(model)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1; got {args.batch_size}")
    files = list_inputs(args.input)
    in_dirs = {p.resolve().parent for p in files}
    if args.output_dir.resolve() in in_dirs:
        raise CLIError(f"{args.output_dir}: the output folder is the input folder; outputs would replace the inputs")
    rank, world = shard_info()
    mask_func = mask_func_from_args(args)
    device = resolve_device(args.device)
    method, preprocessing = resolve_method(args.model, args.checkpoint)
    out_dir = check_writable_dir(args.output_dir)
    if isinstance(method, torch.nn.Module):
        method = method.to(device)
    mine = shard(files, rank, world)
    summary = predict_files(
        mine,
        out_dir,
        method,
        mask_func,
        seed=args.seed,
        cs_method=args.cs_method,
        batch_size=args.batch_size,
        device=device,
        figures=args.figures,
        overwrite=args.overwrite,
        label=args.model,
        preprocessing=preprocessing,
    )
    where = f" (rank {rank} of {world})" if world > 1 else ""
    speed = f", {summary.seconds / summary.slices:.2f} s/slice" if summary.slices else ""
    print(
        f"recon predict{where}: {len(summary.written)} written, {len(summary.skipped)} already done, "
        f"{len(summary.failed)} failed -> {out_dir}{speed}"
    )
    if summary.failed and not summary.written and not summary.skipped:
        return EXIT_NOTHING_DONE
    return EXIT_SOME_FAILED if summary.failed and args.strict else EXIT_OK
