"""``recon figure``: a PNG comparing reconstructions of one slice with the target and the zero-filled image.

INPUT is the original fastMRI-style file (the target comes from it, and the zero-filled image is recomputed from it
with the same mask options as ``recon predict``, so use the same ``--mask`` / ``--acceleration`` /
``--center-fraction`` / ``--seed``); each PREDICTION is a submission file of the same volume. Panels: target,
zero-filled, each reconstruction (SSIM / PSNR in the titles) and their error maps (NMSE). Files without a target
(test files) get the images only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recon.cli._common import CLIError, add_mask_arguments, mask_func_from_args

HELP = "PNG panels: target, zero-filled, reconstruction(s), error maps"
DESCRIPTION = __doc__.split("\n\n", 1)[1].replace("``", "")
EXAMPLES = """\
  recon figure data/file1.h5 out/cirim/file1.h5 --out file1.png
  recon figure data/file1.h5 out/cs/file1.h5 out/cirim/file1.h5 --labels CS CIRIM --slice 3 --out cmp.png
  recon figure data/file1.h5 out8x/rim/file1.h5 --acceleration 8 --center-fraction 0.04 --out rim8x.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="the original fastMRI-style file")
    parser.add_argument("predictions", type=Path, nargs="+", help="submission file(s) of the same volume")
    parser.add_argument("--out", type=Path, required=True, help="output .png")
    parser.add_argument("--labels", nargs="+", help="panel labels (default: each prediction's folder name)")
    parser.add_argument("--slice", type=int, help="slice index (default: the middle slice)")
    add_mask_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from recon.cli.evaluate import PairError, read_image_volume
    from recon.data.mri_data import FastMRIDataError
    from recon.figures import comparison_figure
    from recon.inference import load_volume, zero_filled_volume

    labels = args.labels or [p.resolve().parent.name for p in args.predictions]
    if len(labels) != len(args.predictions):
        raise CLIError(f"--labels gives {len(labels)} labels for {len(args.predictions)} predictions")
    if len(set(labels)) != len(labels):
        raise CLIError(f"labels must be distinct; got {labels} (pass --labels)")
    try:
        volume = load_volume(args.input, mask_func_from_args(args), args.seed)
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
    path = comparison_figure(
        None if target is None else target[index],
        {label: image[index] for label, image in images.items()},
        args.out,
        title=f"{args.input.name}  slice {index}  ({accel:.1f}x)",
        maxval=None if target is None else float(target.max()),
    )
    print(f"wrote {path}")
    return 0
