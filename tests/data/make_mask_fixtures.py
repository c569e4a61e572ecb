"""Write ``tests/data/fastmri_masks.npz``: masks drawn by fastMRI's own mask functions, for parity tests.

Run with an environment that has ``fastmri`` (0.3.0) installed; ``recon`` is not needed::

    python -m venv /tmp/fmd --system-site-packages && /tmp/fmd/bin/pip install fastmri requests
    /tmp/fmd/bin/python tests/data/make_mask_fixtures.py

Each case builds one fastMRI mask function and calls it several times in a row (so the parity test also covers how
the internal generator advances between calls), with a mix of call seeds (``None``, ints, fastMRI's per-file tuple
seeds) and offsets. fastMRI's k-space layout is ``[..., H, W, 2]``; ``recon``'s is complex ``[..., H, W]``, so the
fixture stores the shape ``(H, W)`` and the flattened ``[W]`` masks.

The npz holds, per case ``i``: ``case{i}_masks`` (``[num_calls, W]`` float32), ``case{i}_nlf`` (``[num_calls]``
int64), and ``cases``: a JSON list describing the cases (class, centre fractions, accelerations, combination flag,
constructor seed, shape, calls). It also holds one ``apply_mask`` case with padding (``apply_*`` arrays).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from fastmri.data import subsample, transforms

OUT = Path(__file__).with_name("fastmri_masks.npz")

FNAME_SEED = [ord(c) for c in "file1000001.h5"]

# (fastMRI class, center_fractions, accelerations, allow_any_combination, constructor seed, (H, W), calls)
# calls: list of [offset, seed]; seed None, an int, or a list of ints (fastMRI's tuple(map(ord, fname)))
CASES = [
    (
        "RandomMaskFunc",
        [0.08, 0.04],
        [4, 8],
        False,
        0,
        (16, 368),
        [[None, None]] * 3 + [[None, 42], [None, FNAME_SEED]],
    ),
    ("RandomMaskFunc", [0.08], [4], False, None, (8, 33), [[None, 1], [None, 2], [None, 1]]),
    ("RandomMaskFunc", [0.08, 0.04], [4, 8, 12], True, 5, (8, 320), [[None, None]] * 3 + [[None, 7]]),
    ("EquiSpacedMaskFunc", [0.08, 0.04], [4, 8], False, 1, (16, 368), [[None, None]] * 3 + [[2, None], [None, 3]]),
    ("EquiSpacedMaskFunc", [0.1], [3], False, 2, (8, 31), [[None, None], [0, 11], [None, FNAME_SEED]]),
    ("EquispacedMaskFractionFunc", [0.08, 0.04], [4, 8], False, 3, (16, 368), [[None, None]] * 3 + [[1, None]]),
    ("EquispacedMaskFractionFunc", [0.08], [4], False, None, (8, 320), [[None, 0], [None, 1], [None, FNAME_SEED]]),
    ("EquispacedMaskFractionFunc", [0.1], [3], False, 4, (8, 47), [[None, None], [None, None], [3, None]]),
    ("MagicMaskFunc", [0.08, 0.04], [4, 8], False, 6, (16, 368), [[None, None]] * 3 + [[1, None], [2, None]]),
    ("MagicMaskFunc", [0.1], [4], False, 7, (8, 37), [[None, None], [3, None], [None, 9]]),
    ("MagicMaskFractionFunc", [0.08, 0.04], [4, 8], False, 8, (16, 368), [[None, None]] * 3 + [[0, None]]),
    ("MagicMaskFractionFunc", [0.08], [4], False, None, (8, 321), [[None, 0], [None, FNAME_SEED], [1, 5]]),
]


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    described = []
    for i, (cls_name, cfs, accs, any_comb, init_seed, (h, w), calls) in enumerate(CASES):
        func = getattr(subsample, cls_name)(cfs, accs, allow_any_combination=any_comb, seed=init_seed)
        masks, nlfs = [], []
        for offset, seed in calls:
            call_seed = tuple(seed) if isinstance(seed, list) else seed
            mask, nlf = func((1, h, w, 2), offset=offset, seed=call_seed)
            masks.append(mask.numpy().reshape(w).astype(np.float32))
            nlfs.append(int(nlf))
        arrays[f"case{i}_masks"] = np.stack(masks)
        arrays[f"case{i}_nlf"] = np.asarray(nlfs, dtype=np.int64)
        described.append(
            {
                "class": cls_name,
                "center_fractions": cfs,
                "accelerations": accs,
                "allow_any_combination": any_comb,
                "seed": init_seed,
                "shape": [h, w],
                "calls": calls,
            }
        )

    # apply_mask with padding on a small complex k-space (fastMRI multiplies; the values must still agree)
    rng = np.random.default_rng(0)
    kspace = (rng.standard_normal((3, 8, 40)) + 1j * rng.standard_normal((3, 8, 40))).astype(np.complex64)
    func = subsample.EquispacedMaskFractionFunc([0.1], [4], seed=0)
    masked, mask, nlf = transforms.apply_mask(transforms.to_tensor(kspace), func, seed=(1, 2, 3), padding=(3, 36))
    arrays["apply_kspace"] = kspace
    arrays["apply_masked"] = torch.view_as_complex(masked.contiguous()).numpy()
    arrays["apply_mask"] = mask.numpy().reshape(-1).astype(np.float32)
    arrays["apply_nlf"] = np.asarray(int(nlf))

    arrays["cases"] = np.asarray(json.dumps(described))
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({len(CASES)} cases)")


if __name__ == "__main__":
    main()
