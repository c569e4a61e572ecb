"""Write ``tests/data/fastmri_metrics.npz``: fastMRI's own metric values on small deterministic volumes.

``tests/recon/test_metrics.py`` checks that :mod:`recon.metrics` reproduces them to 1e-6. fastMRI is not a
dependency of this project, so this script runs once, in a side environment (fastMRI 0.3.0 needs ``requests``,
which it does not declare)::

    python -m venv /tmp/fmv --system-site-packages
    /tmp/fmv/bin/pip install fastmri requests
    /tmp/fmv/bin/python tests/data/make_metric_fixtures.py

Volumes (all float64 unless stated; seeds fixed): a smooth random volume and a noisy copy, a Shepp-Logan stack and
a blurred copy, a volume whose slices have very different ranges (to exercise the volume-level ``maxval``), a
non-square odd-sized volume, an explicit ``maxval`` case, and a float32 pair. For each case the file stores
``<case>_gt``, ``<case>_pred``, ``<case>_maxval`` (NaN = default) and fastMRI's ``<case>_nmse``, ``_psnr``,
``_ssim``, plus the per-slice SSIMs from scikit-image (``<case>_ssim_slices``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray, float | None]]:
    from scipy.ndimage import gaussian_filter
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    rng = np.random.default_rng(20240601)
    cases: dict[str, tuple[np.ndarray, np.ndarray, float | None]] = {}

    smooth = gaussian_filter(rng.random((2, 20, 20)), sigma=(0, 2, 2))
    cases["smooth_noise"] = (smooth, smooth + 0.02 * rng.standard_normal(smooth.shape), None)

    phantom = resize(shepp_logan_phantom(), (32, 32), anti_aliasing=True)
    stack = np.stack([phantom, 0.7 * phantom, np.flipud(phantom)])
    cases["phantom_blur"] = (stack, gaussian_filter(stack, sigma=(0, 1.2, 1.2)), None)

    ranges = np.stack([s * scale for s, scale in zip(rng.random((3, 16, 16)), (1.0, 0.1, 5.0), strict=True)])
    cases["slice_ranges"] = (ranges, np.abs(ranges + 0.05 * rng.standard_normal(ranges.shape)), None)

    odd = rng.random((2, 13, 19)) ** 2
    cases["odd_shape"] = (odd, 0.9 * odd + 0.05 * rng.random(odd.shape), None)

    cases["explicit_maxval"] = (smooth, smooth + 0.01 * rng.standard_normal(smooth.shape), 2.5)

    gt32 = phantom[None].astype(np.float32) * np.float32(1e-3)  # fastMRI-like magnitudes
    pred32 = (gt32 + np.float32(2e-5) * rng.standard_normal(gt32.shape).astype(np.float32)).astype(np.float32)
    cases["float32"] = (gt32, pred32, None)
    return cases


def main() -> None:
    from fastmri import evaluate
    from skimage.metrics import structural_similarity

    out: dict[str, np.ndarray] = {}
    names = []
    for name, (gt, pred, maxval) in _cases().items():
        names.append(name)
        out[f"{name}_gt"] = gt
        out[f"{name}_pred"] = pred
        out[f"{name}_maxval"] = np.array(np.nan if maxval is None else maxval)
        out[f"{name}_nmse"] = np.asarray(evaluate.nmse(gt, pred), dtype=np.float64)
        out[f"{name}_psnr"] = np.asarray(evaluate.psnr(gt, pred, maxval), dtype=np.float64)
        out[f"{name}_ssim"] = np.asarray(evaluate.ssim(gt, pred, maxval), dtype=np.float64).reshape(())
        data_range = gt.max() if maxval is None else maxval
        out[f"{name}_ssim_slices"] = np.array(
            [structural_similarity(g, p, data_range=data_range) for g, p in zip(gt, pred, strict=True)]
        )
    out["cases"] = np.array(names)
    import fastmri
    import skimage

    out["versions"] = np.array([f"fastmri {fastmri.__version__}", f"scikit-image {skimage.__version__}"])
    path = Path(__file__).with_name("fastmri_metrics.npz")
    np.savez_compressed(path, **out)
    print(f"wrote {path} ({path.stat().st_size} bytes): {', '.join(names)}")


if __name__ == "__main__":
    main()
