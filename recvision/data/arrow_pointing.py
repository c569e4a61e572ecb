"""Arrow-pointing extrapolation (APE): does the arrow point at the circle?

The task of the pLSTM paper (Pöppel et al., "pLSTM: parallelizable Linear Source Transition Mark networks",
arXiv 2506.11997; generator rules from ``ml-jku/arrow_pointing_dataset``). Each image is white with one black arrow
(a shaft and a two-stroke head) and one filled black disc; the label is 1 if the ray from the arrow's centre along its
direction hits the disc. The task needs long-range, direction-aware reasoning, and the paper trains at one size and
tests at twice the size with the **same geometry in pixels** (bigger canvas, objects as large as before).

Generation (one draw per sample, reference values for 192 px in brackets):

* disc radius ``r ~ U[min_radius, max_radius]`` [15, 30];
* arrow centre uniform in the canvas minus ``boundary_padding`` [30] on every side;
* disc centre at least ``2 r`` away from the arrow centre along x and along y (placed uniformly in the window that
  keeps that distance, wrapping around the padded canvas);
* label 1: direction uniform inside the cone that subtends the disc shrunk to ``r / 1.2``; label 0: uniform outside
  the cone of the disc grown to ``1.2 r`` (``intersection_factor`` 1.2), so no example is borderline;
* arrow length ``~ U[15, 30]``, stroke width ``~ U[2, 4]`` (the reference truncates both to integers), head strokes
  of length ``length / 2.5`` at ±0.5 rad.

Differences from the reference, chosen for small images: the geometry is multiplied by ``scale`` (``1/3`` by
default, so 64 px images look like the reference's 192 px ones: radius 5-10, padding 10, arrow 5-10 px long, stroke
0.67-1.33 px), lengths and widths stay real-valued, strokes and the disc are drawn with anti-aliased (area-coverage)
edges so thin strokes do not break up, and labels are balanced exactly (one positive in every pair of consecutive
indices, which of the two decided by the seed) instead of drawn with probability 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ArrowPointingConfig", "ArrowPointingDataset", "ArrowSample", "ray_hits_disc", "render"]

# head strokes leave the tip at +-0.5 rad from the shaft and are length / 2.5 long, as in the reference generator
_HEAD_ANGLE = 0.5
_HEAD_LENGTH_RATIO = 2.5


@dataclass(frozen=True)
class ArrowPointingConfig:
    """Geometry of the APE task in pixels at ``scale=1`` (the reference's values for 192 px images).

    ``scale`` multiplies every length; the image size itself is given to the dataset, so a model trained on
    ``image_size=64`` can be tested on ``image_size=128`` with unchanged objects, as the paper does for 192 -> 384.
    """

    min_radius: float = 15.0
    max_radius: float = 30.0
    min_dist_factor: float = 2.0
    intersection_factor: float = 1.2
    boundary_padding: float = 30.0
    arrow_length_min: float = 15.0
    arrow_length_max: float = 30.0
    arrow_width_min: float = 2.0
    arrow_width_max: float = 4.0
    scale: float = 1.0 / 3.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)) or value <= 0:
                raise ValueError(f"ArrowPointingConfig.{f.name} must be a positive number; got {value!r}")
        for low, high in (("min_radius", "max_radius"), ("arrow_length_min", "arrow_length_max")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"ArrowPointingConfig.{low} must be <= {high}")
        if self.arrow_width_min > self.arrow_width_max:
            raise ValueError("ArrowPointingConfig.arrow_width_min must be <= arrow_width_max")
        if self.intersection_factor < 1:
            raise ValueError(f"ArrowPointingConfig.intersection_factor must be >= 1; got {self.intersection_factor}")
        if self.min_dist_factor * math.sqrt(2) <= self.intersection_factor:
            raise ValueError("ArrowPointingConfig.min_dist_factor is too small: the arrow could sit inside the cone")

    def scaled(self, name: str) -> float:
        """The length ``name`` in pixels (multiplied by ``scale``)."""
        return getattr(self, name) * self.scale

    def min_image_size(self) -> int:
        """Smallest side that leaves room for the disc window: ``2 padding + 4 max_radius`` (scaled), rounded up."""
        needed = 2 * self.scaled("boundary_padding") + 2 * self.min_dist_factor * self.scaled("max_radius")
        return math.floor(needed) + 1


@dataclass(frozen=True)
class ArrowSample:
    """Geometry of one sample in pixel coordinates (x = column, y = row, origin at the top-left pixel's corner)."""

    arrow_x: float
    arrow_y: float
    angle: float  # direction of the arrow, radians, measured from +x towards +y
    circle_x: float
    circle_y: float
    radius: float
    length: float
    width: float
    label: int


def ray_hits_disc(ax: float, ay: float, angle: float, cx: float, cy: float, radius: float) -> bool:
    """Whether the ray from ``(ax, ay)`` in direction ``angle`` meets the disc of ``radius`` around ``(cx, cy)``.

    The ray hits iff the disc centre projects onto the forward half-line (``t >= 0``) within ``radius`` of it, or
    the origin lies inside the disc.
    """
    dx, dy = cx - ax, cy - ay
    if dx * dx + dy * dy <= radius * radius:
        return True
    along = dx * math.cos(angle) + dy * math.sin(angle)
    if along < 0:
        return False
    across = -dx * math.sin(angle) + dy * math.cos(angle)
    return abs(across) <= radius


def _segment_distance(px: np.ndarray, py: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Distance from points ``(px, py)`` (any shape) to the segment ``(x0, y0)-(x1, y1)``."""
    sx, sy = x1 - x0, y1 - y0
    length2 = sx * sx + sy * sy
    t = np.zeros_like(px) if length2 == 0 else np.clip(((px - x0) * sx + (py - y0) * sy) / length2, 0.0, 1.0)
    return np.hypot(px - (x0 + t * sx), py - (y0 + t * sy))


def render(sample: ArrowSample, height: int, width: int) -> np.ndarray:
    """Draw ``sample`` as a ``[height, width]`` float32 image in [0, 1] (1 = white), anti-aliased.

    Each pixel is darkened by the approximate fraction of its area covered (``clip(w / 2 + 0.5 - distance)`` for a
    stroke of width ``w``, ``clip(r + 0.5 - distance)`` for the disc), measured at the pixel centre.
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    ink = np.clip(sample.radius + 0.5 - np.hypot(xs - sample.circle_x, ys - sample.circle_y), 0.0, 1.0)
    cos_a, sin_a = math.cos(sample.angle), math.sin(sample.angle)
    half = sample.length / 2
    tail = (sample.arrow_x - half * cos_a, sample.arrow_y - half * sin_a)
    tip = (sample.arrow_x + half * cos_a, sample.arrow_y + half * sin_a)
    head = sample.length / _HEAD_LENGTH_RATIO
    strokes = [(tail, tip)]
    for side in (-_HEAD_ANGLE, _HEAD_ANGLE):
        back = sample.angle + side
        strokes.append(((tip[0] - head * math.cos(back), tip[1] - head * math.sin(back)), tip))
    for (x0, y0), (x1, y1) in strokes:
        distance = _segment_distance(xs, ys, x0, y0, x1, y1)
        ink = np.maximum(ink, np.clip(sample.width / 2 + 0.5 - distance, 0.0, 1.0))
    return (1.0 - ink).astype(np.float32)


class ArrowPointingDataset(Dataset):
    """The APE task as a map-style dataset of ``num_samples`` images, each a pure function of ``(seed, index)``.

    Args:
        num_samples: dataset length.
        image_size: side (int) or ``(height, width)`` of the images.
        seed: dataset seed; the reference protocol uses different seeds for train, validation and test.
        config: task geometry (default: the reference's, scaled by 1/3).
        transform: optional callable applied to the image tensor.

    Items are ``(image [3, H, W] float32 in [0, 1], label int)`` (grey levels repeated over 3 channels).
    """

    def __init__(
        self,
        num_samples: int,
        image_size: int | tuple[int, int] = 64,
        seed: int = 0,
        config: ArrowPointingConfig | None = None,
        transform=None,
    ) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int; got {num_samples!r}")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
            raise ValueError(f"image_size must be an int or (height, width); got {image_size!r}")
        self.config = config if config is not None else ArrowPointingConfig()
        if min(size) < self.config.min_image_size():
            raise ValueError(
                f"image_size {size} is too small for the geometry (scale {self.config.scale:.3g}): each side must be "
                f">= {self.config.min_image_size()} px; lower ArrowPointingConfig.scale or enlarge the images"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int; got {seed!r}")
        self.num_samples = num_samples
        self.image_size: tuple[int, int] = size
        self.seed = seed
        self.transform = transform

    def __len__(self) -> int:
        return self.num_samples

    def label(self, index: int) -> int:
        """Label of sample ``index``: in each pair ``(2k, 2k + 1)`` one is 1, chosen by ``(seed, k)``."""
        first_positive = np.random.default_rng([self.seed, index // 2, 1]).random() < 0.5
        return int(first_positive == (index % 2 == 0))

    def sample(self, index: int) -> ArrowSample:
        """Geometry of sample ``index`` (reproducible: depends only on ``seed``, ``index``, size and config)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        cfg = self.config
        rng = np.random.default_rng([self.seed, index, 0])
        label = self.label(index)
        pad = cfg.scaled("boundary_padding")
        height, width = self.image_size
        span_x, span_y = width - 2 * pad, height - 2 * pad

        radius = rng.uniform(cfg.scaled("min_radius"), cfg.scaled("max_radius"))
        ax, ay = span_x * rng.random(), span_y * rng.random()
        offset = cfg.min_dist_factor * radius
        # the disc centre is >= offset from the arrow along each axis, measured around the padded canvas
        cx = (ax + offset + (span_x - 2 * offset) * rng.random()) % span_x
        cy = (ay + offset + (span_y - 2 * offset) * rng.random()) % span_y
        dx, dy = cx - ax, cy - ay
        distance = math.hypot(dx, dy)
        target = radius / cfg.intersection_factor if label else radius * cfg.intersection_factor
        half_cone = math.asin(target / distance)  # half-angle under which the disc of radius `target` is seen
        toward = math.atan2(dy, dx)
        if label:
            angle = toward + rng.uniform(-half_cone, half_cone)
        else:
            angle = toward + half_cone + rng.uniform(0.0, 2 * math.pi - 2 * half_cone)
        angle = math.remainder(angle, 2 * math.pi)
        length = rng.uniform(cfg.scaled("arrow_length_min"), cfg.scaled("arrow_length_max"))
        stroke = rng.uniform(cfg.scaled("arrow_width_min"), cfg.scaled("arrow_width_max"))
        return ArrowSample(ax + pad, ay + pad, angle, cx + pad, cy + pad, radius, length, stroke, label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index < 0:
            index += self.num_samples
        sample = self.sample(index)
        image = torch.from_numpy(render(sample, *self.image_size)).expand(3, -1, -1).contiguous()
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.label

    def with_size(self, image_size: int | tuple[int, int], seed: int | None = None) -> ArrowPointingDataset:
        """A dataset of the same length and geometry at another image size (the extrapolation test set)."""
        return ArrowPointingDataset(
            self.num_samples, image_size, self.seed if seed is None else seed, replace(self.config), self.transform
        )
