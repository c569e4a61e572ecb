"""CPU timings of the ``recon`` operators per 320 x 320 x 15-coil slice (a script, not a test).

Times, on one synthetic complex64 slice (Shepp-Logan x smooth coil maps, 4x random line mask with 8% centre):
centred FFT / inverse FFT of all coils, SENSE expand / reduce, the zero-filled reconstructions, coil-map estimation
(ACS and ESPIRiT, default options), MoDL conjugate-gradient DC (``ConjugateGradientDC``, 10 iterations) and the two
CS-SENSE baselines with their default iteration budgets (TV primal-dual, wavelet-l1 FISTA).

Method: ``torch.set_num_threads(2)``, inference mode; every operation runs once untimed (warm-up), then
``--repeats`` (>= 3) timed runs; the table gives the median and the min-max range. Run from the repository root::

    python benchmarks/recon_ops.py                 # 320 x 320, 15 coils, 3 repeats
    python benchmarks/recon_ops.py --size 128 --coils 8 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
from collections.abc import Callable

import torch
from _measure import median_time
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from recon.baselines import (
    TV_ITERATIONS,
    WAVELET_ITERATIONS,
    tv_sense,
    wavelet_sense,
    zero_filled_rss,
    zero_filled_sense,
)
from recon.layers import ConjugateGradientDC
from recon.ops.coils import estimate_sens_maps, rss, sens_expand, sens_reduce
from recon.ops.fft import fft2c, ifft2c

NUM_THREADS = 2


def make_slice(size: int, coils: int, seed: int = 0) -> dict[str, torch.Tensor | int]:
    """Synthetic multi-coil slice: image [H, W], maps [C, H, W], masked k-space [C, H, W], mask [1, W]."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    image = torch.from_numpy(resize(shepp_logan_phantom(), (size, size), anti_aliasing=True))
    image = image * torch.exp(1j * (0.5 * xx + 0.3 * yy**2))
    maps = []
    for c in range(coils):
        a = 2 * math.pi * c / coils
        mag = torch.exp(-((yy - 1.5 * math.sin(a)) ** 2 + (xx - 1.5 * math.cos(a)) ** 2) / (2 * 1.2**2))
        maps.append(mag * torch.exp(1j * (a + 0.8 * (xx * math.cos(a) + yy * math.sin(a)))))
    sens = torch.stack(maps)
    sens = (sens / rss(sens).unsqueeze(0)).to(torch.complex64)
    image = image.to(torch.complex64)
    kspace = fft2c(sens * image)
    kspace = kspace + 0.01 * torch.complex(
        torch.randn(kspace.shape, generator=g), torch.randn(kspace.shape, generator=g)
    )
    num_low = round(0.08 * size)
    start = (size - num_low + 1) // 2
    lines = torch.rand(size, generator=g) < (size / 4 - num_low) / (size - num_low)
    lines[start : start + num_low] = True
    return {
        "image": image,
        "sens": sens,
        "kspace": torch.where(lines, kspace, 0),
        "mask": lines.float()[None],
        "num_low": num_low,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320, help="image side H = W (default 320)")
    parser.add_argument("--coils", type=int, default=15, help="number of coils (default 15)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per operation, >= 3 (default 3)")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    torch.set_num_threads(NUM_THREADS)

    data = make_slice(args.size, args.coils)
    kspace, sens, mask, image, num_low = data["kspace"], data["sens"], data["mask"], data["image"], data["num_low"]
    espirit_maps = estimate_sens_maps(kspace, num_low, "espirit")
    cg = ConjugateGradientDC(num_iterations=10)
    ops: list[tuple[str, Callable[[], object]]] = [
        ("fft2c (all coils)", lambda: fft2c(kspace)),
        ("ifft2c (all coils)", lambda: ifft2c(kspace)),
        ("sens_expand", lambda: sens_expand(image, sens)),
        ("sens_reduce", lambda: sens_reduce(kspace, sens)),
        ("zero-filled RSS", lambda: zero_filled_rss(kspace)),
        ("zero-filled SENSE", lambda: zero_filled_sense(kspace, sens)),
        (f"sens maps: ACS ({num_low} lines)", lambda: estimate_sens_maps(kspace, num_low, "acs")),
        (f"sens maps: ESPIRiT ({num_low} lines, kernel 6)", lambda: estimate_sens_maps(kspace, num_low, "espirit")),
        ("CG-DC (MoDL, 10 CG iterations)", lambda: cg(image, kspace, espirit_maps, mask)),
        (f"CS TV, primal-dual ({TV_ITERATIONS} it)", lambda: tv_sense(kspace, espirit_maps, mask)),
        (f"CS wavelet db4, FISTA ({WAVELET_ITERATIONS} it)", lambda: wavelet_sense(kspace, espirit_maps, mask)),
    ]
    print(
        f"recon ops, one {args.size}x{args.size} slice, {args.coils} coils, complex64, CPU, "
        f"{NUM_THREADS} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}; "
        f"median of {args.repeats} runs after one warm-up\n"
    )
    print("| operation | median (ms) | min - max (ms) |")
    print("|---|---:|---:|")
    with torch.inference_mode():
        for name, fn in ops:
            times = [t * 1e3 for t in median_time(fn, args.repeats)[1]]
            print(f"| {name} | {statistics.median(times):.1f} | {min(times):.1f} - {max(times):.1f} |", flush=True)


if __name__ == "__main__":
    main()
