"""``recon figure``: a PNG comparing reconstructions of one slice with the target and the zero-filled image.

INPUT is the original fastMRI-style file (the target comes from it, and the zero-filled image is recomputed from it);
each PREDICTION is a submission file of the same volume. The zero-filled image uses the mask recorded in the
predictions' provenance (written by ``recon predict``): predictions that disagree on mask type, acceleration, centre
fraction or seed are refused, as is a mask option that contradicts them. Predictions without provenance (older
recon) fall back to the mask options (with a warning), so pass those ``recon predict`` used. Panels: target,
zero-filled, each reconstruction (SSIM / PSNR in the titles) and their error maps (NMSE). Files without a target
(test files) get the images only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recon.cli._common import (
    MASK_DEFAULTS,
    CLIError,
    add_mask_arguments,
    check_writable_file,
    mask_func_from_args,
)

HELP = "PNG panels: target, zero-filled, reconstruction(s), error maps"
DESCRIPTION = __doc__.split("\n\n", 1)[1].replace("``", "")
EXAMPLES = """\
  recon figure data/file1.h5 out/cirim/file1.h5 --out file1.png
  recon figure data/file1.h5 out/cs/file1.h5 out/cirim/file1.h5 --labels CS CIRIM --slice 3 --out cmp.png
  recon figure data/file1.h5 out8x/rim/file1.h5 --out rim8x.png    # the 8x mask comes from the prediction
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="the original fastMRI-style file")
    parser.add_argument("predictions", type=Path, nargs="+", help="submission file(s) of the same volume")
    parser.add_argument("--out", type=Path, required=True, help="output .png")
    parser.add_argument("--labels", nargs="+", help="panel labels (default: each prediction's folder name)")
    parser.add_argument("--slice", type=int, help="slice index (default: the middle slice)")
    add_mask_arguments(parser, defaults_from="the predictions' provenance")


def mask_settings_for(args: argparse.Namespace, predictions: list[Path]) -> argparse.Namespace:
    """The mask options to redraw the zero-filled image with: those recorded in the predictions' provenance.

    Raises:
        CLIError: When predictions disagree on the undersampling, when a given mask option contradicts their
            record, or when a record cannot be read; names the files and settings.
    """
    from recon.inference import MASK_TYPES
    from recon.provenance import mask_settings, read_provenance

    options = ("mask", "acceleration", "center_fraction", "seed")
    recorded: list[tuple[Path, dict[str, object]]] = []
    unrecorded: list[Path] = []
    for path in predictions:
        try:
            record = read_provenance(path) if path.is_file() else None
        except (OSError, ValueError) as err:
            raise CLIError(f"{path}: cannot read its provenance ({err})") from None
        if record is None:
            unrecorded.append(path)
        else:
            recorded.append((path, mask_settings(record)))
    for path, settings in recorded[1:]:
        if settings != recorded[0][1]:
            first, first_settings = recorded[0]
            raise CLIError(
                f"{path}: undersampled differently from {first} ({_show(settings)} vs {_show(first_settings)}); "
                "one figure compares reconstructions of one mask, draw one figure per mask"
            )
    given = {key: getattr(args, key) for key in options if getattr(args, key) is not None}
    if not recorded:
        if unrecorded:
            used = {**MASK_DEFAULTS, **given}
            print(
                f"recon figure: warning: {unrecorded[0]} has no provenance (older recon); the zero-filled panel uses "
                f"the mask options ({_show(used)}): pass those recon predict used",
                file=sys.stderr,
            )
        return argparse.Namespace(**{**MASK_DEFAULTS, **given})
    path, settings = recorded[0]
    if unrecorded:
        print(f"recon figure: warning: {unrecorded[0]} has no provenance; assuming the mask of {path}", file=sys.stderr)
    if settings.get("mask") == "file":  # the input's own mask is used whatever the options say
        return argparse.Namespace(**{**MASK_DEFAULTS, **given})
    for key, value in given.items():
        if key in settings and settings[key] != value:
            option = "--" + key.replace("_", "-")
            raise CLIError(f"{option} {value} contradicts the provenance of {path} ({key} {settings[key]!r})")
    if settings.get("mask") not in MASK_TYPES or not all(isinstance(settings.get(k), int | float) for k in options[1:]):
        raise CLIError(f"{path}: its recorded mask ({_show(settings)}) cannot be redrawn by recon figure")
    return argparse.Namespace(**settings)


def check_inputs(input: Path, predictions: list[Path]) -> None:
    """Refuse missing files, folders, and predictions of another volume before reading anything.

    A prediction is matched to its target by file name, as ``recon evaluate`` does: a prediction of another volume
    would otherwise be drawn and scored against the wrong target without any sign of it.

    Raises:
        CLIError: Naming the file and what was expected.
    """
    for path, role in [(input, "input"), *((p, "prediction") for p in predictions)]:
        if path.is_dir():
            raise CLIError(f"{path}: is a folder; expected the {role} .h5 file")
        if not path.is_file():
            raise CLIError(f"{path}: no such file ({role})")
    for path in predictions:
        if path.name != input.name:
            raise CLIError(
                f"{path}: file name differs from the input {input.name}; a prediction is matched to its target by "
                "name (as recon evaluate does), pass the prediction of the same volume"
            )


def _show(settings: dict[str, object]) -> str:
    return ", ".join(f"{key} {value}" for key, value in settings.items())


def run(args: argparse.Namespace) -> int:
    from recon.cli.evaluate import PairError, read_image_volume
    from recon.data.mri_data import FastMRIDataError
    from recon.figures import comparison_figure, mask_image
    from recon.inference import load_volume, zero_filled_volume

    labels = args.labels or [p.resolve().parent.name for p in args.predictions]
    if len(labels) != len(args.predictions):
        raise CLIError(f"--labels gives {len(labels)} labels for {len(args.predictions)} predictions")
    if len(set(labels)) != len(labels):
        raise CLIError(f"labels must be distinct; got {labels} (pass --labels)")
    check_inputs(args.input, args.predictions)
    check_writable_file(args.out, "the figure")  # before loading anything: fail fast, draw nothing
    settings = mask_settings_for(args, args.predictions)
    try:
        volume = load_volume(args.input, mask_func_from_args(settings), settings.seed)
    except FastMRIDataError as err:
        raise CLIError(str(err)) from None
    zero_filled = zero_filled_volume(volume)
    target = None if volume.target is None else volume.target.numpy()
    images = {"zero-filled": zero_filled}
    for label, path in zip(labels, args.predictions, strict=True):
        try:
            images[label] = read_image_volume(path, ("reconstruction",))
        except PairError as err:
            raise CLIError(str(err)) from None
        if images[label].shape != zero_filled.shape:
            raise CLIError(
                f"{path}: shape {images[label].shape} differs from the recon matrix {zero_filled.shape} of {args.input}"
            )
    num_slices = zero_filled.shape[0]
    index = num_slices // 2 if args.slice is None else args.slice
    if not 0 <= index < num_slices:
        raise CLIError(f"--slice {index} is out of range [0, {num_slices})")
    if target is not None and target.shape != zero_filled.shape:
        target = None  # a target of another size (unusual header) cannot be compared pixel by pixel
    accel = volume.mask.numel() / max(float(volume.mask.sum()), 1.0)
    nominal = f"{settings.mask} {settings.acceleration:g}x, " if volume.retrospective else "the file's mask, "
    try:
        path = comparison_figure(
            None if target is None else target[index],
            {label: image[index] for label, image in images.items()},
            args.out,
            title=f"{args.input.name}  slice {index}  ({nominal}sampled {accel:.1f}x)",
            maxval=None if target is None else float(target.max()),
            mask=mask_image(volume.mask),
            zoom="auto",
        )
    except OSError as err:  # e.g. the folder became unwritable or the disk is full while drawing
        raise CLIError(f"{args.out}: cannot write the figure ({err.strerror or err})") from None
    print(f"wrote {path}")
    return 0
