"""Arrow-pointing extrapolation generator: determinism, balance, geometric label correctness, sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recvision.data import ArrowPointingConfig, ArrowPointingDataset, load_builtin, ray_hits_disc


def _hits(s, radius: float) -> bool:
    """Ray-disc intersection from scratch: solve |a + t u - c|^2 = radius^2 for a real root t >= 0."""
    ux, uy = math.cos(s.angle), math.sin(s.angle)
    fx, fy = s.arrow_x - s.circle_x, s.arrow_y - s.circle_y
    b = fx * ux + fy * uy
    c = fx * fx + fy * fy - radius * radius
    disc = b * b - c
    if disc < 0:
        return False
    return -b + math.sqrt(disc) >= 0  # the larger root is on the forward half-line


def test_deterministic_per_index():
    a = ArrowPointingDataset(50, 64, seed=7)
    b = ArrowPointingDataset(50, 64, seed=7)
    for i in (0, 13, 49):
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and ya == yb
    # an item does not depend on which items were read before it
    assert torch.equal(ArrowPointingDataset(50, 64, seed=7)[13][0], a[13][0])
    assert a.sample(3) != ArrowPointingDataset(50, 64, seed=8).sample(3)
    assert torch.equal(a[-1][0], a[49][0])


def test_labels_balanced_exactly_and_not_by_parity():
    ds = ArrowPointingDataset(1000, 64, seed=3)
    labels = np.array([ds.label(i) for i in range(len(ds))])
    assert labels.sum() == 500
    assert (labels[0::2] + labels[1::2] == 1).all()
    assert 0.4 < labels[0::2].mean() < 0.6  # which of a pair is positive is random
    assert all(ds.sample(i).label == labels[i] for i in range(0, 1000, 97))


@pytest.mark.parametrize("size", [64, 128, (80, 112)])
def test_labels_match_ray_disc_geometry(size):
    ds = ArrowPointingDataset(300, size, seed=11)
    cfg = ds.config
    height, width = ds.image_size
    for i in range(len(ds)):
        s = ds.sample(i)
        # the label is the ray meeting the drawn disc, with the reference's 1.2 margin either way
        assert _hits(s, s.radius) == bool(s.label)
        assert _hits(s, s.radius / cfg.intersection_factor) == bool(s.label)
        assert _hits(s, s.radius * cfg.intersection_factor) == bool(s.label)
        assert ray_hits_disc(s.arrow_x, s.arrow_y, s.angle, s.circle_x, s.circle_y, s.radius) == bool(s.label)
        # geometry rules: radius range, >= 2r apart per axis (around the padded canvas), objects inside the image
        assert cfg.scaled("min_radius") <= s.radius <= cfg.scaled("max_radius")
        pad = cfg.scaled("boundary_padding")
        span_x, span_y = width - 2 * pad, height - 2 * pad
        dx, dy = abs(s.circle_x - s.arrow_x), abs(s.circle_y - s.arrow_y)
        assert min(dx, span_x - dx) >= 2 * s.radius - 1e-9 and min(dy, span_y - dy) >= 2 * s.radius - 1e-9
        assert pad <= s.circle_x <= width - pad and pad <= s.arrow_y <= height - pad
        assert s.circle_x - s.radius >= 0 and s.circle_x + s.radius <= width


def test_image_shows_disc_and_arrow():
    ds = ArrowPointingDataset(20, 64, seed=0)
    for i in range(len(ds)):
        image, label = ds[i]
        s = ds.sample(i)
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert torch.equal(image[0], image[1]) and 0 <= image.min() and image.max() <= 1
        assert image[0, int(s.circle_y), int(s.circle_x)] == 0  # the disc is filled black
        tip_x = s.arrow_x + 0.5 * s.length * math.cos(s.angle)
        tip_y = s.arrow_y + 0.5 * s.length * math.sin(s.angle)
        assert image[0, int(tip_y), int(tip_x)] < 0.75  # ink at the arrow tip
        ink = (1 - image[0]).sum().item()
        assert math.pi * s.radius**2 * 0.8 < ink < math.pi * s.radius**2 * 1.2 + 2 * s.length * (s.width + 1) + 5


@pytest.mark.parametrize("size", [64, 96, 128, (64, 100)])
def test_any_image_size_and_fixed_geometry(size):
    ds = ArrowPointingDataset(8, size, seed=1)
    image, _ = ds[5]
    expected = (size, size) if isinstance(size, int) else size
    assert image.shape == (3, *expected)
    # the objects keep their pixel size at every image size (the extrapolation setting)
    radii = [ds.sample(i).radius for i in range(8)]
    assert all(5 - 1e-9 <= r <= 10 + 1e-9 for r in radii)
    assert ds.with_size(128).image_size == (128, 128)


def test_bad_arguments():
    with pytest.raises(ValueError, match="too small"):
        ArrowPointingDataset(4, 48)
    with pytest.raises(ValueError, match="num_samples"):
        ArrowPointingDataset(0, 64)
    with pytest.raises(ValueError, match="image_size"):
        ArrowPointingDataset(4, (64, 64, 3))
    with pytest.raises(ValueError, match="min_radius"):
        ArrowPointingConfig(min_radius=40.0)
    with pytest.raises(IndexError):
        ArrowPointingDataset(4, 64).sample(4)
    # the unscaled reference geometry needs the reference's image sizes
    assert ArrowPointingConfig(scale=1.0).min_image_size() == 181
    ArrowPointingDataset(2, 192, config=ArrowPointingConfig(scale=1.0))[0]


def test_builtin_datasets():
    digits = load_builtin("digits")
    assert len(digits.train) + len(digits.val) == 1797 and len(digits.class_names) == 10
    image, label = digits.val[0]
    assert image.mode == "RGB" and image.size == (8, 8) and 0 <= label < 10
    lfw = load_builtin("lfw", seed=1)
    assert len(lfw.val) == 40 and lfw.class_names == ["non-face", "face"]
    assert sorted(lfw.val.labels).count(1) == 20  # stratified
    ape = load_builtin("arrow-pointing", img_size=64)
    image, label = ape.train[0]
    assert image.size == (64, 64) and label in (0, 1)
    with pytest.raises(ValueError, match="unknown built-in dataset"):
        load_builtin("cifar10")
