"""``recon synth``: write a synthetic fastMRI-style multi-coil (or single-coil) dataset.

Each volume is simulated by :func:`recon.data.synthetic.write_synthetic_dataset`: magnitude images from a source
(Shepp-Logan and random-ellipse phantoms; MNI152 / EPI brain anatomy when nilearn / nibabel are installed; pydicom's
MR test images; scikit-image's photographs as texture; or "realistic", a mixture drawn per volume), a smooth phase,
birdcage coil maps, complex Gaussian noise, the RSS target and an ISMRMRD header. Files are named
``{prefix}_{source}_{seed}_{i:03d}.h5``; everything is deterministic given ``--seed``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recon.cli._common import (
    CLIError,
    add_mask_arguments,
    check_writable_dir,
    mask_func_from_args,
    remove_if_left_empty,
)

HELP = "write a synthetic fastMRI-style dataset"
DESCRIPTION = __doc__.split("\n\n", 1)[1].replace("``", "").replace(":func:", "")
EXAMPLES = """\
  recon synth data/                                     # 2 volumes x 4 slices, 64 x 48, 4 coils
  recon synth data/ --volumes 8 --slices 16 --size 128 128 --coils 8 --seed 1
  recon synth brains/ --source mni                      # needs nilearn (pip install nilearn)
  recon synth corpus/ --source realistic --volumes 400 --size 128 128 --coils 4 16 --noise 0 0.03   # training mix
  recon synth test/ --test-layout --acceleration 8 --center-fraction 0.04   # undersampled, with a mask, no target
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from recon.data.synthetic import SOURCES

    parser.add_argument("out_dir", type=Path, help="output folder (created)")
    parser.add_argument("--volumes", type=int, default=2, help="number of files (%(default)s)")
    parser.add_argument("--slices", type=int, default=4, help="slices per file (%(default)s)")
    parser.add_argument(
        "--coils", type=int, nargs="+", default=[4], metavar="N", help="receive coils, or a range LO HI per volume (4)"
    )
    parser.add_argument("--size", type=int, nargs="+", default=[64, 48], metavar="N", help="k-space H [W] (64 48)")
    parser.add_argument("--recon-size", type=int, nargs=2, metavar="N", help="recon matrix h w (default: --size)")
    parser.add_argument("--source", choices=SOURCES, default="phantom", help="image source (%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (%(default)s)")
    parser.add_argument(
        "--noise",
        type=float,
        nargs="+",
        default=[0.005],
        metavar="X",
        help="noise std relative to max|x|, or a range LO HI drawn log-uniformly per volume (0.005)",
    )
    parser.add_argument("--singlecoil", action="store_true", help="single-coil files (kspace (slices, H, W))")
    parser.add_argument("--prefix", default="synth", help="file-name prefix (%(default)s)")
    parser.add_argument(
        "--test-layout",
        action="store_true",
        help="write test-set files: undersampled k-space with its mask (the mask options below), no target",
    )
    add_mask_arguments(parser, seed=False, title="mask of --test-layout files")


def run(args: argparse.Namespace) -> int:
    if len(args.size) not in (1, 2) or min(args.size) < 8:
        raise CLIError(f"--size takes H or H W, each >= 8; got {args.size}")
    shape = (args.size[0], args.size[-1])
    if args.volumes < 1 or args.slices < 1 or min(args.coils) < 1:
        raise CLIError("--volumes, --slices and --coils must be >= 1")
    for flag, values in (("--coils", args.coils), ("--noise", args.noise)):
        if len(values) not in (1, 2) or (len(values) == 2 and values[0] > values[1]):
            raise CLIError(f"{flag} takes one value or a range LO HI with LO <= HI; got {values}")
    if min(args.noise) < 0:
        raise CLIError(f"--noise must be >= 0; got {args.noise}")
    mask_func = None
    if args.test_layout:
        mask_func = mask_func_from_args(args)
        if args.mask not in ("equispaced", "random"):
            raise CLIError("--test-layout stores a 1-D line mask: use --mask equispaced or random")
    with remove_if_left_empty(args.out_dir):  # a setting write_synthetic_dataset refuses leaves no empty folder
        out_dir = check_writable_dir(args.out_dir)
        paths = _write(args, out_dir, shape, mask_func)
    print(f"recon synth: wrote {len(paths)} file{'' if len(paths) == 1 else 's'} to {out_dir}")
    return 0


def _write(args: argparse.Namespace, out_dir: Path, shape: tuple[int, int], mask_func: object) -> list[Path]:
    from recon.data.synthetic import write_synthetic_dataset

    try:
        paths = write_synthetic_dataset(
            out_dir,
            num_volumes=args.volumes,
            num_slices=args.slices,
            shape=shape,
            num_coils=args.coils[0] if len(args.coils) == 1 else tuple(args.coils),
            source=args.source,
            seed=args.seed,
            challenge="singlecoil" if args.singlecoil else "multicoil",
            recon_size=None if args.recon_size is None else tuple(args.recon_size),
            noise_std=args.noise[0] if len(args.noise) == 1 else tuple(args.noise),
            mask_func=mask_func,
            include_target=not args.test_layout,
            prefix=args.prefix,
        )
    except (ValueError, ImportError) as err:
        raise CLIError(str(err)) from None
    return paths
