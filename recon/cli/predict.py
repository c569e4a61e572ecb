"""``recon predict``: reconstruct fastMRI-style files into fastMRI submission files.

For each input file ``NAME.h5`` the output is ``OUTPUT_DIR/NAME.h5`` holding a float32 ``reconstruction``
``(slices, h, w)`` cropped to the recon matrix of the file's header (the leaderboard format; see
:mod:`recon.data.writer`). Fully sampled inputs are undersampled retrospectively with a mask seeded by
``(--seed, file name)``; inputs that store a ``mask`` (fastMRI test files) are used as they are.

Every output records its provenance as HDF5 attributes (method, sha256 of the weights and their config, mask type,
acceleration, centre fraction, seed, CS parameters, precision, recon version; :mod:`recon.provenance`).

Batches are resumable and shardable: outputs are written atomically (temporary file + rename), a rerun skips every
output whose recorded provenance equals this run's, and under ``torchrun --nproc_per_node N`` (``RANK`` /
``WORLD_SIZE`` in the environment) each process takes every N-th file of the sorted list; no process group is needed.
An existing output with other settings (or with no record: an older recon) is never reused or replaced silently:
the run stops before writing anything, naming the file and the differing settings, unless ``--overwrite`` is given
(then it is replaced atomically).

A bad file costs one error line naming it; the others are still processed. The exit status is 1 when nothing could
be done (every file failed), else 0 (with ``--strict``: 3 when any file failed). A partial failure does not fail
the process by default because ``torchrun`` stops every rank when one exits non-zero.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from recon.cli._common import (
    CLIError,
    add_mask_arguments,
    check_writable_dir,
    checkpoint_files,
    error_line,
    list_inputs,
    load_checkpoint_model,
    load_default_model,
    mask_func_from_args,
    progress,
    remove_if_left_empty,
    resolve_device,
    shard,
    shard_info,
)

HELP = "reconstruct undersampled files with a model or a classical baseline"
DESCRIPTION = (
    __doc__.split("\n\n", 1)[1]
    .replace("``", "")
    .replace(":mod:`recon.data.writer`", "recon.data.writer")
    .replace(":mod:`recon.provenance`", "recon.provenance")
)
EXAMPLES = """\
  # default CIRIM weights, 4x equispaced retrospective undersampling of every file in data/
  recon predict data/ out/cirim --model cirim
  # 8x Poisson-disc 2-D mask, compressed sensing (TV), with PNG figures in out/cs/figures/
  recon predict data/ out/cs --model cs --mask poisson --acceleration 8 --center-fraction 0.04 --figures
  # your own weights (a folder written by `recon train`; the model is the one stored in it)
  recon predict data/file1.h5 out/ --checkpoint runs/rim/last
  # CS with a tuned weight and budget
  recon predict data/ out/cs8 --model cs --acceleration 8 --center-fraction 0.04 --cs-lambda 0.03 --cs-iterations 200
  # 4 processes, each taking a quarter of the files; rerun the same command to resume
  torchrun --nproc_per_node 4 -m recon predict data/ out/ --model recurrentvarnet
"""

EXIT_OK, EXIT_NOTHING_DONE, EXIT_SOME_FAILED = 0, 1, 3
DEFAULT_MODEL = "cirim"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from recon.inference import BASELINES, CS_METHODS, MODEL_NAMES

    parser.add_argument("input", type=Path, help="a fastMRI-style .h5 file, or a folder of them")
    parser.add_argument("output_dir", type=Path, help="folder for the submission files (created)")
    parser.add_argument(
        "--model",
        choices=(*MODEL_NAMES, *BASELINES),
        default=None,
        help=f"method (default: the model stored in --checkpoint, else {DEFAULT_MODEL}); cs = CS SENSE",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="weights: a `recon train` checkpoint folder, a .safetensors file (<stem>.json or config.json beside "
        "it) or a weights-only .pt; default: the shipped weights",
    )
    parser.add_argument(
        "--cs-method",
        choices=CS_METHODS,
        default=CS_METHODS[0],
        help="CS regulariser (%(default)s: total variation, better than wavelets on the synthetic phantoms)",
    )
    parser.add_argument(
        "--cs-lambda",
        type=float,
        default=None,
        help="CS regularisation weight relative to max |A^H y| (default: 3e-3 for tv, 1e-3 for wavelet)",
    )
    parser.add_argument("--cs-iterations", type=int, default=None, help="CS iterations (default: 100)")
    add_mask_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=4, help="slices per forward pass (%(default)s)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--precision",
        default="fp32",
        help="fp32 (default) or bf16: the model's convolutions and recurrent cells in bfloat16 autocast, FFTs / "
        "coil operators / data consistency in complex64 (models only); conv weights channels-last in both",
    )
    parser.add_argument("--figures", action="store_true", help="also write OUTPUT_DIR/figures/NAME.png")
    parser.add_argument(
        "--overwrite", action="store_true", help="redo outputs that already exist (atomically replaced)"
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 3 when any file failed")


@dataclass
class PredictSummary:
    """What :func:`predict_files` did, by file."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    slices: int = 0


def _remove_stale_temporaries(out_dir: Path, name: str) -> None:
    """Temporary files a killed run of *this* file left behind (other ranks' files are not touched)."""
    for tmp in out_dir.glob(f".{name}.*.tmp"):
        tmp.unlink(missing_ok=True)


class OutputMismatch(ValueError):
    """Existing outputs were written with other settings (or without a record) and ``overwrite`` is off."""


def _has_file_mask(path: Path) -> bool:
    """Whether an input stores its own ``mask`` (fastMRI test files): then the mask options do not apply to it.
    An unreadable input counts as without; reading it properly reports the problem later."""
    try:
        with h5py.File(path, "r") as hf:
            return "mask" in hf
    except Exception:  # reported, naming the file, when the volume is loaded
        return False


def output_record(
    method_record: Mapping[str, object], undersampling: Mapping[str, object], precision: str = "fp32"
) -> dict[str, object]:
    """The full provenance of one output: the method's settings, the undersampling, the precision the method ran in
    (``"fp32"`` or ``"bf16"``) and the recon version."""
    from recon import __version__

    return {**method_record, **undersampling, "precision": precision, "recon_version": __version__}


def _output_state(target: Path, wanted: Mapping[str, object]) -> str | None:
    """``None`` when ``target`` is missing; ``""`` when it is a finished output of exactly ``wanted``; else why not."""
    from recon.provenance import describe_differences, read_provenance

    if not target.exists():
        return None
    try:
        with h5py.File(target, "r") as hf:
            complete = "reconstruction" in hf and hf["reconstruction"].ndim == 3
        stored = read_provenance(target)
    except (OSError, ValueError) as err:
        return f"not a readable recon output ({err})"
    if not complete:
        return "not a recon output (no 3-D 'reconstruction' dataset)"
    if stored is None:
        return "written without provenance (by an older recon or another tool), so its settings are unknown"
    if stored != wanted:
        return f"written with other settings: {describe_differences(stored, wanted)}"
    return ""


def plan_outputs(
    files: list[Path], out_dir: Path, records: Mapping[Path, Mapping[str, object]], overwrite: bool
) -> tuple[list[Path], list[Path]]:
    """Split ``files`` into ``(to_do, already_done)`` by comparing the records with the existing outputs.

    Raises:
        OutputMismatch: Without ``overwrite``, when any existing output differs from its record (names the first
            such file and the differing settings, and counts the others); nothing has been written then.
    """
    to_do, done, refused = [], [], []
    for path in files:
        state = _output_state(out_dir / path.name, records[path])
        if state == "":
            (to_do if overwrite else done).append(path)
        elif state is None or overwrite:
            to_do.append(path)
        else:
            refused.append((out_dir / path.name, state))
    if refused:
        target, why = refused[0]
        more = f" (and {len(refused) - 1} more output(s) in {out_dir})" if len(refused) > 1 else ""
        raise OutputMismatch(
            f"{target}: refusing to reuse or replace an existing output{more}: it was {why}; "
            "pass --overwrite to replace it, or choose another output folder"
        )
    return to_do, done


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
    cs_lambda: float | None = None,
    cs_iterations: int | None = None,
    method_record: Mapping[str, object] | None = None,
    precision: str = "fp32",
) -> PredictSummary:
    """Reconstruct ``files`` into ``out_dir``, reusing outputs of identical provenance, one error line per bad file.

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
        overwrite: Redo finished outputs, and replace outputs of other settings.
        label: Name of the method in figures.
        report: Called with each error line (default: printed on stderr).
        preprocessing: :class:`recon.inference.Preprocessing` of the model (default ACS maps, max scaling).
        cs_lambda: CS weight (default: :func:`recon.inference.cs_defaults`).
        cs_iterations: CS iterations (default: :func:`recon.inference.cs_defaults`).
        method_record: The method's provenance (:func:`method_provenance`); default: derived from ``method``
            (for a model, the sha256 of its state dict, as no weights file is known here).
        precision: ``"fp32"`` or ``"bf16"`` (models only; :func:`recon.inference.make_reconstructor`); recorded
            in every output.

    Returns:
        The summary.

    Raises:
        OutputMismatch: When an existing output has other settings and ``overwrite`` is off (nothing written).
    """
    from torch import nn

    from recon.data.keys import FastMRIKey
    from recon.data.mri_data import FastMRIDataError
    from recon.data.writer import save_reconstructions
    from recon.inference import load_volume, make_reconstructor, mask_record, reconstruct_volume, zero_filled_volume

    report = report or (lambda line: error_line("predict", line))
    reconstructor = make_reconstructor(method, cs_method, cs_lambda, cs_iterations, precision)  # type: ignore[arg-type]
    is_model = isinstance(method, nn.Module)
    if method_record is None:
        method_record = method_provenance(method, preprocessing, cs_method, cs_lambda, cs_iterations)
    retrospective = mask_record(mask_func, seed)  # type: ignore[arg-type]
    records = {
        path: output_record(method_record, {"mask": "file"} if _has_file_mask(path) else retrospective, precision)
        for path in files
    }
    to_do, done = plan_outputs(files, out_dir, records, overwrite)
    summary = PredictSummary(skipped=done)
    for path in progress(to_do, desc="files", total=len(to_do), leave=True):
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
            # the record says how the file was undersampled as loaded (a file mask wins over the options)
            record = output_record(
                method_record, mask_record(mask_func, seed) if volume.retrospective else {"mask": "file"}, precision
            )  # type: ignore[arg-type]
            save_reconstructions({path.name: recon}, out_dir, attrs=record)
            summary.written.append(path)
            if figures:
                _figure(volume, recon, zero_filled_volume(volume), out_dir / "figures" / f"{path.stem}.png", label)
        except (FastMRIDataError, ValueError, OSError, RuntimeError, IndexError) as err:
            message = str(err) if str(path) in str(err) else f"{path}: {err}"
            summary.failed.append((path, message))
            report(message)
    return summary


def _figure(volume: object, recon: np.ndarray, zero_filled: np.ndarray, path: Path, label: str) -> None:
    from recon.figures import comparison_figure, mask_image

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
        mask=mask_image(volume.mask),  # type: ignore[attr-defined]
        zoom="auto",
    )


def state_dict_sha256(model: object) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a model's state dict (for models without a weights file)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():  # type: ignore[attr-defined]
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def method_provenance(
    method: object,
    preprocessing: object = None,
    cs_method: str = "tv",
    cs_lambda: float | None = None,
    cs_iterations: int | None = None,
    name: str | None = None,
    weights_file: Path | None = None,
    config_file: Path | None = None,
) -> dict[str, object]:
    """The method part of an output's provenance.

    Args:
        method: A model, ``"zero-filled"`` or ``"cs"``.
        preprocessing: The model's :class:`recon.inference.Preprocessing` (default: ACS maps, max scaling).
        cs_method: CS regulariser (``"cs"`` only).
        cs_lambda: CS weight; ``None`` records the default actually used.
        cs_iterations: CS iterations; ``None`` records the default actually used.
        name: The model's registry name (default: looked up from its class).
        weights_file: The weights file the model was loaded from: its sha256 is recorded (default: the sha256 of
            the state dict in memory).
        config_file: The JSON config beside the weights (a checkpoint's ``config.json``, a default model's
            ``<name>.json``): its sha256 is recorded, so an edited model config is a different method.

    Returns:
        ``method``, ``weights_sha256``, ``config_sha256``, ``sens_method``, ``normalize`` and for ``"cs"``
        ``cs_method`` / ``cs_lambda`` / ``cs_iterations``.
    """
    from torch import nn

    from recon.inference import Preprocessing, cs_defaults
    from recon.models import MODELS
    from recon.provenance import file_sha256

    prep = preprocessing if isinstance(preprocessing, Preprocessing) else Preprocessing()
    record: dict[str, object] = {}
    if isinstance(method, nn.Module):
        if name is None:
            name = next((key for key, (cls, _) in MODELS.items() if type(method) is cls), type(method).__name__)
        record["method"] = name
        record["weights_sha256"] = file_sha256(weights_file) if weights_file else state_dict_sha256(method)
        record["config_sha256"] = file_sha256(config_file) if config_file else None
    else:
        record["method"] = str(method)
        if method == "cs":
            lam, iterations = cs_defaults(cs_method)
            record["cs_method"] = cs_method
            record["cs_lambda"] = float(lam if cs_lambda is None else cs_lambda)
            record["cs_iterations"] = int(iterations if cs_iterations is None else cs_iterations)
    record["sens_method"] = prep.sens_method
    record["normalize"] = prep.normalize
    if prep.noise_floor:
        record["noise_floor"] = True
    return record


@dataclass(frozen=True)
class ResolvedMethod:
    """What ``--model`` / ``--checkpoint`` select: the method, its pre-processing, name and provenance."""

    method: object
    preprocessing: object
    name: str
    record: dict[str, object]


def resolve_method(args: argparse.Namespace) -> ResolvedMethod:
    """The method of ``--model`` / ``--checkpoint`` / ``--cs-*``: a loaded model with the pre-processing it was
    trained with, or a baseline's name; without ``--model``, the model stored in ``--checkpoint`` (else cirim).

    Raises:
        CLIError: For options that do not apply to the method, or a checkpoint that cannot be loaded.
    """
    from recon.inference import BASELINES

    model, checkpoint = args.model, args.checkpoint
    if model != "cs" and (args.cs_lambda is not None or args.cs_iterations is not None):
        raise CLIError(f"--cs-lambda / --cs-iterations apply to --model cs only (got --model {model or DEFAULT_MODEL})")
    if model in BASELINES:
        if checkpoint is not None:
            raise CLIError(f"--checkpoint does not apply to --model {model}")
        if model == "cs":
            if args.cs_lambda is not None and not args.cs_lambda >= 0:
                raise CLIError(f"--cs-lambda must be >= 0; got {args.cs_lambda}")
            if args.cs_iterations is not None and args.cs_iterations < 1:
                raise CLIError(f"--cs-iterations must be >= 1; got {args.cs_iterations}")
        record = method_provenance(model, None, args.cs_method, args.cs_lambda, args.cs_iterations)
        return ResolvedMethod(model, None, model, record)
    if checkpoint is not None:
        network, preprocessing = load_checkpoint_model(checkpoint, expected=model)
        weights_file, config_file = checkpoint_files(checkpoint)
        record = method_provenance(network, preprocessing, weights_file=weights_file, config_file=config_file)
        return ResolvedMethod(network, preprocessing, str(record["method"]), record)
    model = model or DEFAULT_MODEL
    network, preprocessing = load_default_model(model)
    try:
        from recon.weights import WEIGHTS_DIR

        weights_file, config_file = WEIGHTS_DIR / f"{model}.safetensors", WEIGHTS_DIR / f"{model}.json"
        record = method_provenance(
            network, preprocessing, name=model, weights_file=weights_file, config_file=config_file
        )
    except (ImportError, OSError) as err:  # loaded, but its files cannot be hashed (e.g. a patched loader)
        raise CLIError(f"cannot hash the default weights of {model!r} for the outputs' provenance ({err})") from None
    return ResolvedMethod(network, preprocessing, model, record)


def run(args: argparse.Namespace) -> int:
    import torch

    from recon.inference import BASELINES, PRECISIONS

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1; got {args.batch_size}")
    if args.precision not in PRECISIONS:
        raise CLIError(f"--precision must be one of {', '.join(PRECISIONS)}; got {args.precision!r}")
    if args.precision != "fp32" and args.model in BASELINES:
        raise CLIError(f"--precision {args.precision} applies to the learned models; --model {args.model} runs in fp32")
    files = list_inputs(args.input)
    in_dirs = {p.resolve().parent for p in files}
    if args.output_dir.resolve() in in_dirs:
        raise CLIError(f"{args.output_dir}: the output folder is the input folder; outputs would replace the inputs")
    rank, world = shard_info()
    mask_func = mask_func_from_args(args)
    # every method loads volumes through a mask with a fully sampled centre (the coil maps of the models and CS come
    # from it); refuse a centre of 0 once, naming the option, instead of blaming each input file. Files that store
    # their own mask ignore the mask options, so only inputs undersampled here count.
    if not args.center_fraction > 0 and not all(_has_file_mask(path) for path in files):
        raise CLIError(
            f"--center-fraction must be > 0 (got {args.center_fraction:g}): the coil maps are estimated from the "
            "fully sampled centre of the mask"
        )
    device = resolve_device(args.device)
    resolved = resolve_method(args)
    method = resolved.method
    if isinstance(method, torch.nn.Module):
        method = method.to(device)
    mine = shard(files, rank, world)
    # every file failing (or an error) must not leave behind an output folder this command made
    with remove_if_left_empty(args.output_dir):
        out_dir = check_writable_dir(args.output_dir)
        summary = _predict(args, mine, out_dir, method, mask_func, device, resolved)
    where = f" (rank {rank} of {world})" if world > 1 else ""
    speed = f", {summary.seconds / summary.slices:.2f} s/slice" if summary.slices else ""
    print(
        f"recon predict{where}: {len(summary.written)} written, {len(summary.skipped)} already done, "
        f"{len(summary.failed)} failed -> {out_dir}{speed}"
    )
    if summary.failed and not summary.written and not summary.skipped:
        return EXIT_NOTHING_DONE
    return EXIT_SOME_FAILED if summary.failed and args.strict else EXIT_OK


def _predict(
    args: argparse.Namespace,
    mine: list[Path],
    out_dir: Path,
    method: object,
    mask_func: object,
    device: str,
    resolved: ResolvedMethod,
) -> PredictSummary:
    """:func:`predict_files` with the parsed options; an output of other settings becomes a :class:`CLIError`."""
    try:
        return predict_files(
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
            label=resolved.name,
            preprocessing=resolved.preprocessing,
            cs_lambda=args.cs_lambda,
            cs_iterations=args.cs_iterations,
            method_record=resolved.record,
            precision=args.precision,
        )
    except OutputMismatch as err:
        raise CLIError(str(err)) from None
