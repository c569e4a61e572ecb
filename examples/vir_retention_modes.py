"""Build ``vir_base``, run it on a real image in its three retention modes, and show they agree.

The weights are random (no ViR weights are published), but made non-trivial: LayerScale is set to 1 so every
block really mixes tokens. Run: ``python examples/vir_retention_modes.py [--size 224] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import timm
import torch
from skimage import data
from skimage.transform import resize

import recvision  # noqa: F401  (registers vir_* with timm)


def load_image(size: int) -> torch.Tensor:
    """scikit-image's bundled astronaut photo as a normalised ``[1, 3, size, size]`` tensor."""
    img = resize(data.astronaut(), (size, size), anti_aliasing=True).astype(np.float32)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    return (x - 0.5) / 0.5  # ViR's cfg uses Inception mean/std (0.5, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vir_base")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode (after one warm-up)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    model = timm.create_model(args.model, num_classes=10, dynamic_img_size=True).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ls1.gamma", "ls2.gamma")):
                p.fill_(1.0)
    x = load_image(args.size)
    n_tokens = (args.size // 16) ** 2 + 1
    print(
        f"{args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{args.size}x{args.size} image -> {n_tokens} tokens"
    )

    logits, times = {}, {}
    for mode in ("parallel", "chunkwise", "recurrent"):
        model.set_retention_mode(mode)
        with torch.inference_mode():
            logits[mode] = model(x)  # warm-up
            runs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model(x)
                runs.append(time.perf_counter() - start)
        times[mode] = statistics.median(runs)

    ref = logits["parallel"]
    print(f"{'mode':<10} {'time (ms)':>10} {'max |logit - parallel|':>24}  top class")
    for mode in logits:
        diff = (logits[mode] - ref).abs().max().item()
        print(f"{mode:<10} {times[mode] * 1e3:>10.1f} {diff:>24.2e}  {logits[mode].argmax().item()}")
    worst = max((logits[m] - ref).abs().max().item() for m in logits)
    scale = ref.abs().max().item()
    agree = worst <= 1e-4 * max(1.0, scale)
    print(f"logit scale {scale:.3f}; the three modes {'AGREE' if agree else 'DISAGREE'} (max difference {worst:.2e})")
    if not agree:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
