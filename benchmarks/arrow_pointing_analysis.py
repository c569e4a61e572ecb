"""How well determined is the APE label, and what does a trained model get wrong? (no training here)

Two reports for the task of ``benchmarks/arrow_pointing.py`` (same geometry flags):

* ``oracle``: statistics of the generated geometry (distances, margins, arrows touching the disc or the canvas edge)
  and the accuracy of rule-based "oracles" that know the sample's geometry up to a perturbation: the arrow's angle
  with Gaussian noise or quantised to a few directions, the arrow and disc centres quantised to the token grid, the
  arrow's direction ignored (the line through the arrow instead of the ray). They bound what a model that reads the
  image only that coarsely can reach.
* ``errors``: a model saved by ``arrow_pointing.py --json RESULTS --save-weights`` is evaluated on the validation
  images; its error rate is split by the geometry (distance to the disc, radius, arrow length, angular margin to the
  disc's tangent, label), and optionally the first misclassified images are drawn to a PNG.
* ``sensitivity``: for freshly initialised models, how strongly the output depends on each token cell (gradient
  norm of the logit margin): a head that sees only a few cells has no gradient from the objects at the start.

Usage::

    python benchmarks/arrow_pointing_analysis.py oracle --arrow-scale 2
    python benchmarks/arrow_pointing_analysis.py errors results/ape_cpu.json lightnet 0 --png errors.png
    python benchmarks/arrow_pointing_analysis.py sensitivity -- --stem-norm batch --plstm-pool corners
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent))

import arrow_pointing as ape  # noqa: E402  (the benchmark next to this file)

FIELDS = ("arrow_x", "arrow_y", "angle", "circle_x", "circle_y", "radius", "length", "width", "label")


def geometry(num_samples: int, image_size: int, seed: int, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The geometry of the first ``num_samples`` samples of the APE dataset ``seed`` as arrays, plus derived values.

    Derived: ``distance`` (arrow centre to disc centre), ``margin_deg`` (angle between the arrow's direction and the
    nearer tangent from the arrow centre to the disc: how far the direction may turn before the label flips).
    """
    from recvision.data import ArrowPointingDataset

    dataset = ArrowPointingDataset(num_samples, image_size, seed, ape.task_geometry(args))
    samples = [dataset.sample(i) for i in range(num_samples)]
    g = {name: np.array([getattr(s, name) for s in samples], dtype=np.float64) for name in FIELDS}
    dx, dy = g["circle_x"] - g["arrow_x"], g["circle_y"] - g["arrow_y"]
    g["distance"] = np.hypot(dx, dy)
    half_cone = np.arcsin(np.clip(g["radius"] / g["distance"], 0.0, 1.0))
    offset = np.abs(np.remainder(g["angle"] - np.arctan2(dy, dx) + np.pi, 2 * np.pi) - np.pi)
    g["margin_deg"] = np.degrees(np.abs(offset - half_cone))
    return g


def ray_hits(ax, ay, angle, cx, cy, radius, grow: float = 1.0) -> np.ndarray:
    """Vectorised ``recvision.data.ray_hits_disc`` with the disc's radius multiplied by ``grow``."""
    dx, dy = cx - ax, cy - ay
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    return ((along >= 0) & (np.abs(across) <= radius * grow)) | (dx * dx + dy * dy <= radius * radius)


def _touching(g: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: does the arrow's ink touch the disc, and does it come within half a stroke of the canvas edge."""
    cos_a, sin_a, half = np.cos(g["angle"]), np.sin(g["angle"]), g["length"] / 2
    tail = (g["arrow_x"] - half * cos_a, g["arrow_y"] - half * sin_a)
    tip = (g["arrow_x"] + half * cos_a, g["arrow_y"] + half * sin_a)
    segments = [(tail, tip)]
    head = g["length"] / 2.5
    for side in (-0.5, 0.5):
        back = g["angle"] + side
        segments.append(((tip[0] - head * np.cos(back), tip[1] - head * np.sin(back)), tip))
    gap = np.full(len(g["label"]), np.inf)
    ends = []
    for (x0, y0), (x1, y1) in segments:
        sx, sy = x1 - x0, y1 - y0
        t = np.clip(((g["circle_x"] - x0) * sx + (g["circle_y"] - y0) * sy) / (sx * sx + sy * sy), 0.0, 1.0)
        gap = np.minimum(gap, np.hypot(g["circle_x"] - (x0 + t * sx), g["circle_y"] - (y0 + t * sy)))
        ends += [x0, y0, x1, y1]
    return gap < g["radius"] + g["width"] / 2, np.stack(ends).min(0) < g["width"] / 2


def oracle_report(args: argparse.Namespace) -> str:
    g = geometry(args.samples, args.train_size, ape.VAL_SEED, args)
    y = g["label"] == 1
    rng = np.random.default_rng(0)
    ax, ay, th, cx, cy, r = (g[k] for k in ("arrow_x", "arrow_y", "angle", "circle_x", "circle_y", "radius"))
    touch, edge = _touching(g)
    lines = [
        f"{args.samples} validation samples at {args.train_size} px, arrow scale {args.arrow_scale:g}",
        f"arrow length {g['length'].min():.1f}-{g['length'].max():.1f} px, stroke {g['width'].min():.2f}-"
        f"{g['width'].max():.2f} px, radius {r.min():.1f}-{r.max():.1f} px, arrow-disc distance 5/50/95 %: "
        + " / ".join(f"{v:.1f}" for v in np.percentile(g["distance"], [5, 50, 95]))
        + " px",
        f"arrow ink touching the disc: {100 * touch.mean():.2f} %; arrow within half a stroke of the canvas edge: "
        f"{100 * edge.mean():.2f} %",
        "angular margin to the disc's tangent (deg), 5/25/50 %: positives "
        + " / ".join(f"{v:.1f}" for v in np.percentile(g["margin_deg"][y], [5, 25, 50]))
        + ", negatives "
        + " / ".join(f"{v:.1f}" for v in np.percentile(g["margin_deg"][~y], [5, 25, 50])),
        "",
        "| oracle | accuracy % | with the best widened disc % |",
        "|---|---|---|",
    ]
    grows = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0)

    def row(name: str, *geo) -> None:
        accs = {k: 100 * float(np.mean(ray_hits(*geo, grow=k) == y)) for k in grows}
        best = max(accs, key=accs.get)
        lines.append(f"| {name} | {accs[1.0]:.1f} | {accs[best]:.1f} (radius x{best:g}) |")

    for sigma in (2, 5, 10, 15, 20):
        row(f"angle + N(0, {sigma} deg)", ax, ay, th + math.radians(sigma) * rng.standard_normal(len(th)), cx, cy, r)
    for k in (8, 16, 32):
        step = 2 * math.pi / k
        row(f"angle quantised to {k} directions", ax, ay, np.round(th / step) * step, cx, cy, r)
    for cell in (4, 8):

        def q(v, cell=cell):
            return (np.floor(v / cell) + 0.5) * cell

        row(f"both centres quantised to {cell} px cells", q(ax), q(ay), th, q(cx), q(cy), r)
    row("direction reversed (head read as tail)", ax, ay, th + math.pi, cx, cy, r)
    across = -(cx - ax) * np.sin(th) + (cy - ay) * np.cos(th)
    line_acc = 100 * float(np.mean((np.abs(across) <= r) == y))
    lines.append(f"| line through the arrow (direction ignored) | {line_acc:.1f} | - |")
    return "\n".join(lines)


def sensitivity_report(args: argparse.Namespace) -> str:
    """How much each token cell of the stem's map moves the logit margin of a freshly initialised model.

    The gradient norm of ``logit_1 - logit_0`` with respect to every cell of the map that the model's patch embedding
    reads (the stem's output, or the image's patches without a stem), averaged over validation images and scaled so
    that the largest cell is 1; and the share of the patch embedding's output (root mean square, before position
    embeddings) that varies between images (the rest is the biases). The stem runs in training mode (a batch norm
    normalises with the batch's statistics, as in the first update). A head whose output does not depend on most
    cells at initialisation gets no gradient from the arrow and the disc until the layers below it have learnt to
    carry them there.
    """
    import torch

    from recvision.data import ArrowPointingDataset

    run_args = ape.build_parser().parse_args(args.benchmark_args)
    torch.set_num_threads(1)
    dataset = ArrowPointingDataset(args.samples, run_args.train_size, ape.VAL_SEED, ape.task_geometry(run_args))
    images, _ = ape._render(dataset, range(args.samples))
    x = ape.INPUTS[run_args.input](images.float().div(255).expand(-1, 3, -1, -1))
    lines = ["| model | head | image share of the embedded tokens | corner cells | other border cells | inner cells |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for family in args.models:
        torch.manual_seed(0)
        model = ape.build_model(family, run_args).eval()
        stem, net = (model[0], model[1]) if run_args.stem_layers else (torch.nn.Identity(), model)
        cells = stem.train()(x).detach()
        if not run_args.stem_layers:  # no stem: one cell per patch, the gradient of the image summed over the patch
            cells = x.clone()
        with torch.no_grad():  # how much of the embedded tokens varies with the image
            tokens = net.patch_embed(cells)
            share = (tokens.std(0).pow(2).mean() / tokens.pow(2).mean()).sqrt().item()
        cells.requires_grad_(True)
        logits = net(cells)
        (logits[:, 1] - logits[:, 0]).sum().backward()
        grad = cells.grad.pow(2).sum(1)
        if not run_args.stem_layers:
            grad = torch.nn.functional.avg_pool2d(grad[:, None], run_args.patch_size)[:, 0]
        grid = grad.sqrt().mean(0)
        grid = grid / grid.max()
        corner = torch.zeros_like(grid, dtype=torch.bool)
        corner[[0, 0, -1, -1], [0, -1, 0, -1]] = True
        border = torch.zeros_like(corner)
        border[[0, -1], :] = True
        border[:, [0, -1]] = True
        head = {"plstm": run_args.plstm_pool, "vit": run_args.vit_pool}.get(family, "model default")

        spans = [f"{grid[mask].min():.2f}-{grid[mask].max():.2f}" for mask in (corner, border & ~corner, ~border)]
        lines.append(f"| {ape.MODELS[family][0]} | {head} | {share:.3f} | " + " | ".join(spans) + " |")
    return "\n".join(lines)


def _bins(name: str, values: np.ndarray, wrong: np.ndarray, edges) -> str:
    cells = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (values >= low) & (values < high)
        if inside.any():
            cells.append(f"[{low:g}, {high:g}): {100 * wrong[inside].mean():.0f} % of {inside.sum()}")
    return f"  error by {name}: " + "; ".join(cells)


def errors_report(args: argparse.Namespace) -> str:
    import torch

    from recvision.data import ArrowPointingDataset

    results = Path(args.results)
    saved = json.loads(results.read_text())["protocol"]
    run_args = ape.build_parser().parse_args([])
    for key, value in {**ape.ADDED_LATER, **saved}.items():
        setattr(run_args, key, value)
    weights = results.with_suffix(".runs") / f"{args.family}_seed{args.seed}.pt"
    if not weights.exists():
        raise SystemExit(f"{weights}: no saved model (run arrow_pointing.py with --save-weights)")
    torch.set_num_threads(1)
    model = ape.build_model(args.family, run_args)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    size = args.image_size or run_args.train_size
    seed = ape.VAL_SEED if size == run_args.train_size else ape.EXT_SEED
    dataset = ArrowPointingDataset(args.samples, size, seed, ape.task_geometry(run_args))
    images, labels = ape._render(dataset, range(args.samples))
    transform = ape.INPUTS[run_args.input]
    with torch.no_grad():
        logits = torch.cat([model(transform(images[i : i + 128].float().div(255).expand(-1, 3, -1, -1)))
                            for i in range(0, args.samples, 128)])  # fmt: skip
    wrong = (logits.argmax(-1) != labels).numpy()
    g = geometry(args.samples, size, seed, run_args)
    y = g["label"] == 1
    lines = [
        f"{args.family} seed {args.seed} ({weights}), {args.samples} images at {size} px: "
        f"accuracy {100 * (1 - wrong.mean()):.1f} %",
        f"  error on positives {100 * wrong[y].mean():.1f} %, on negatives {100 * wrong[~y].mean():.1f} %",
        _bins("arrow-disc distance (px)", g["distance"], wrong, [0, 20, 25, 30, 35, 40, 100]),
        _bins("radius (px)", g["radius"], wrong, [0, 6, 7, 8, 9, 11]),
        _bins("arrow length (px)", g["length"], wrong, [0, 12, 14, 16, 18, 21]),
        _bins("angular margin (deg), positives", np.where(y, g["margin_deg"], np.nan), wrong, [0, 3, 5, 10, 20, 90]),
        _bins("angular margin (deg), negatives", np.where(y, np.nan, g["margin_deg"]), wrong,
              [0, 5, 10, 20, 45, 90, 180]),
    ]  # fmt: skip
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shown = np.flatnonzero(wrong)[: args.show]
        cols, rows = 6, max(1, math.ceil(len(shown) / 6))
        fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), squeeze=False)
        for axis in axes.flat:
            axis.axis("off")
        for axis, i in zip(axes.flat, shown, strict=False):
            axis.imshow(images[i, 0].numpy(), cmap="gray", vmin=0, vmax=255)
            axis.set_title(f"y={int(y[i])} m={g['margin_deg'][i]:.0f}° d={g['distance'][i]:.0f}", fontsize=8)
        fig.tight_layout()
        fig.savefig(args.png, dpi=80)
        lines.append(f"  {len(shown)} misclassified images drawn to {args.png} (title: label, margin, distance)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="report", required=True)
    oracle = sub.add_parser("oracle", help="label determinacy and oracle accuracies (geometry only)")
    oracle.add_argument("--samples", type=int, default=20000)
    oracle.add_argument("--train-size", type=int, default=64)
    oracle.add_argument("--scale", type=float, default=1 / 3)
    oracle.add_argument("--arrow-scale", type=float, default=2.0)
    errors = sub.add_parser("errors", help="error analysis of a model saved with --save-weights")
    errors.add_argument("results", help="results JSON of arrow_pointing.py (its protocol rebuilds the model)")
    errors.add_argument("family", choices=[f for f in ape.MODELS if f != "convnext"])
    errors.add_argument("seed", type=int)
    errors.add_argument("--samples", type=int, default=2048)
    errors.add_argument("--image-size", type=int, default=0, help="0: the training size")
    errors.add_argument("--png", default=None, help="draw the first --show misclassified images here")
    errors.add_argument("--show", type=int, default=24)
    sens = sub.add_parser("sensitivity", help="which token cells a freshly initialised model's output depends on")
    sens.add_argument("--models", nargs="+", choices=list(ape.MODELS)[:4], default=list(ape.MODELS)[:4])
    sens.add_argument("--samples", type=int, default=32)
    sens.add_argument("benchmark_args", nargs=argparse.REMAINDER, help="arrow_pointing.py flags, after --")
    args = parser.parse_args(argv)
    if args.report == "sensitivity" and args.benchmark_args[:1] == ["--"]:
        args.benchmark_args = args.benchmark_args[1:]
    reports = {"oracle": oracle_report, "errors": errors_report, "sensitivity": sensitivity_report}
    report = reports[args.report](args)
    print(report)
    return report


if __name__ == "__main__":
    main()
