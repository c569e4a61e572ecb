"""Magnitude images for the synthetic MRI generator: phantoms, packaged real anatomy and natural-image textures.

Every source returns float64 ``[S, h, w]`` in ``[0, 1]``, the object centred in the box with air (zeros) around it:

* ``"shepp_logan"`` (scikit-image's Shepp-Logan phantom, scaled like cross-sections of an ellipsoid), ``"ellipses"``
  (random smooth-edged 3-D ellipsoids sliced in z, with a smooth multiplicative texture), ``"phantom"`` (alternates
  the two by volume index);
* ``"mni"``: axial slices of nilearn's MNI152 T1 template (an average of 152 subjects: smooth);
* ``"epi"``: axial slices of nibabel's bundled ``example4d.nii.gz`` (one real subject's brain EPI, 24 slices, two
  frames), heights 25-80 %; ``"epi_train"`` and ``"epi_heldout"`` split its slices into two disjoint slabs (indices
  at most 13 and at least 14 of 0-23, frame by volume index), so a model trained on the first can be scored on the
  second;
* ``"natural"``: scikit-image's bundled photographs and micrographs (:data:`NATURAL_IMAGES`; natural-image texture
  transfers to MRI reconstruction), a random crop, rotation and flip of one image per volume inside a random smooth
  object outline with air around it;
* ``"abdomen"`` and ``"mr_small"``: pydicom's bundled MR test images (a 300 x 484 axial abdomen MR and a 64 x 64 head
  MR crop; needs ``pydicom``), real anatomy from other subjects and scanners, for held-out evaluation.

:data:`TRAINING_MIX` is the source mixture of the realistic training corpus (``source="realistic"`` in
:func:`recon.data.synthetic.write_synthetic_dataset`); it holds none of the held-out sources.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
from scipy import ndimage
from skimage import data as skdata
from skimage import transform as sktransform

__all__ = [
    "HELDOUT_SOURCES",
    "NATURAL_IMAGES",
    "SOURCES",
    "TRAINING_MIX",
    "pick_source",
    "source_images",
]

SOURCES = (
    "phantom",
    "shepp_logan",
    "ellipses",
    "mni",
    "epi",
    "epi_train",
    "epi_heldout",
    "natural",
    "abdomen",
    "mr_small",
    "realistic",
)
HELDOUT_SOURCES = ("epi_heldout", "abdomen", "mr_small")
# (source, probability) per volume of the realistic training corpus
TRAINING_MIX: tuple[tuple[str, float], ...] = (
    ("natural", 0.35),
    ("epi_train", 0.25),
    ("mni", 0.2),
    ("ellipses", 0.1),
    ("shepp_logan", 0.1),
)
# scikit-image images that ship with the package (no download); licences in skimage/data/README.txt
NATURAL_IMAGES = (
    "camera",
    "astronaut",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coffee",
    "chelsea",
    "cat",
    "rocket",
    "coins",
    "clock",
    "cell",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "page",
    "text",
)
_EPI_SLABS = {"epi": (0.25, 0.8), "epi_train": (0.1, 0.5), "epi_heldout": (0.65, 0.9)}


def _fit(image: np.ndarray, box: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """Resize ``image`` (aspect kept) to fit ``scale * box`` and centre it in a zero ``box``."""
    h, w = image.shape
    factor = scale * min(box[0] / h, box[1] / w)
    new_h = max(1, min(box[0], round(h * factor)))
    new_w = max(1, min(box[1], round(w * factor)))
    small = sktransform.resize(image, (new_h, new_w), order=1, anti_aliasing=True, mode="constant")
    out = np.zeros(box)
    top, left = (box[0] - new_h) // 2, (box[1] - new_w) // 2
    out[top : top + new_h, left : left + new_w] = small
    return out


def _slice_scales(num_slices: int, extent: float = 0.75) -> np.ndarray:
    """Cross-section scale of an ellipsoid cut at ``num_slices`` evenly spaced heights in ``[-extent, extent]``."""
    z = np.linspace(-extent, extent, num_slices) if num_slices > 1 else np.zeros(1)
    return np.sqrt(1.0 - z**2)


def _shepp_logan(num_slices: int, box: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    base = skdata.shepp_logan_phantom()
    angle = rng.uniform(-10.0, 10.0)
    rotated = sktransform.rotate(base, angle, order=1, mode="constant")
    out = np.clip(np.stack([_fit(rotated, box, s) for s in _slice_scales(num_slices)]), 0.0, None)
    return out / max(out.max(), 1e-12)  # small boxes blur the thin bright rim: renormalise to [0, 1]


def _ellipses(num_slices: int, box: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = box
    y = np.linspace(-1.0, 1.0, h)[:, None]
    x = np.linspace(-1.0, 1.0, w)[None, :]
    z = np.linspace(-0.7, 0.7, num_slices) if num_slices > 1 else np.zeros(1)
    # (centre yxz, semi-axes yxz, in-plane angle, intensity): a "skull" shell, a "brain" and random blobs
    shell_axes = np.array([0.95, 0.95 * rng.uniform(0.75, 1.0), 1.0])
    blobs = [(np.zeros(3), shell_axes, 0.0, 0.9), (np.zeros(3), shell_axes * 0.9, 0.0, -0.6)]
    for _ in range(rng.integers(5, 10)):
        centre = np.append(rng.uniform(-0.45, 0.45, 2), rng.uniform(-0.5, 0.5))
        axes = np.append(rng.uniform(0.06, 0.3, 2), rng.uniform(0.3, 0.9))
        blobs.append((centre, axes, rng.uniform(0, math.pi), rng.uniform(-0.25, 0.4)))
    edge = 0.6 / max(h, w)  # smooth edges: the sigmoid's 10-90 % width is about 1.3 pixels
    volume = np.zeros((len(z), h, w))
    for s, zs in enumerate(z):
        for centre, axes, angle, value in blobs:
            dz = (zs - centre[2]) / axes[2]
            if abs(dz) >= 1.0:
                continue
            shrink = math.sqrt(1.0 - dz**2)
            cos, sin = math.cos(angle), math.sin(angle)
            yy, xx = y - centre[0], x - centre[1]
            u = (cos * yy + sin * xx) / (axes[0] * shrink)
            v = (-sin * yy + cos * xx) / (axes[1] * shrink)
            radius = np.sqrt(u**2 + v**2)
            with np.errstate(over="ignore"):  # far outside a blob exp overflows to inf: the term is then exactly 0
                volume[s] += value / (1.0 + np.exp((radius - 1.0) * min(axes[0], axes[1]) * shrink / edge))
    texture = ndimage.gaussian_filter(rng.standard_normal(volume.shape), sigma=(1.0, 2.0, 2.0))
    texture /= texture.std() + 1e-12
    volume = np.clip(volume, 0.0, None) * (1.0 + 0.12 * texture)
    return np.clip(volume, 0.0, None) / max(volume.max(), 1e-12)


@functools.lru_cache(maxsize=2)
def _load_mni() -> np.ndarray:
    try:
        from nilearn.datasets import load_mni152_template
    except ImportError as err:
        raise ImportError("source='mni' needs nilearn (pip install nilearn)") from err
    # RAS voxel axes (x: left-right, y: posterior-anterior, z: inferior-superior)
    return np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float64)


@functools.lru_cache(maxsize=2)
def _load_epi() -> np.ndarray:
    try:
        import nibabel
        from nibabel.testing import data_path
    except ImportError as err:
        raise ImportError("source='epi' needs nibabel (pip install nibabel)") from err
    image = nibabel.load(os.path.join(data_path, "example4d.nii.gz"))
    return np.asarray(image.get_fdata(), dtype=np.float64)  # (128, 96, 24, 2), LAS


def _axial_stack(volume: np.ndarray, num_slices: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """Axial slices (anterior up) of a 3-D ``(x, y, z)`` volume at ``num_slices`` heights in ``[lo, hi]`` of z."""
    nz = volume.shape[2]
    shift = rng.uniform(-0.05, 0.05)
    heights = np.linspace(lo, hi, num_slices) + shift if num_slices > 1 else np.array([(lo + hi) / 2 + shift])
    index = np.clip(np.round(heights * (nz - 1)).astype(int), 0, nz - 1)
    stack = np.stack([np.flipud(volume[:, :, k].T) for k in index])
    # crop to the bounding box of the head over the whole stack
    rows = np.flatnonzero(stack.max(axis=(0, 2)) > 0.05 * stack.max())
    cols = np.flatnonzero(stack.max(axis=(0, 1)) > 0.05 * stack.max())
    return stack[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _anatomy(stack: np.ndarray, box: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(-8.0, 8.0)
    scale = rng.uniform(0.9, 1.0)
    out = np.stack(
        [_fit(sktransform.rotate(s, angle, order=1, mode="constant", resize=True), box, scale) for s in stack]
    )
    out = np.clip(out, 0.0, None)
    return out / max(out.max(), 1e-12)


def source_images(
    source: str, num_slices: int, box: tuple[int, int], rng: np.random.Generator, volume_index: int = 0
) -> np.ndarray:
    """Magnitude images ``[num_slices, h, w]`` in ``[0, 1]`` from one of :data:`SOURCES`.

    Args:
        source: one of :data:`SOURCES` except the mixture ``"realistic"`` (see the module docstring).
        num_slices: Number of slices.
        box: Output size ``(h, w)``; the object is centred and fills it (aspect kept).
        rng: Random generator (rotations, slice positions, random phantoms).
        volume_index: Picks the phantom for ``"phantom"`` (even: Shepp-Logan, odd: ellipses) and the EPI frame.

    Raises:
        ValueError: Unknown source. ImportError: The package a source needs is missing.
    """
    if source == "phantom":
        source = "shepp_logan" if volume_index % 2 == 0 else "ellipses"
    if source == "shepp_logan":
        return _shepp_logan(num_slices, box, rng)
    if source == "ellipses":
        return _ellipses(num_slices, box, rng)
    if source == "mni":
        return _anatomy(_axial_stack(_load_mni(), num_slices, 0.3, 0.65, rng), box, rng)
    if source in _EPI_SLABS:
        epi = _load_epi()
        lo, hi = _EPI_SLABS[source]
        return _anatomy(_axial_stack(epi[..., volume_index % epi.shape[-1]], num_slices, lo, hi, rng), box, rng)
    if source == "natural":
        return _natural(num_slices, box, rng, volume_index)
    if source in ("abdomen", "mr_small"):
        return _dicom_slices(source, num_slices, box, rng)
    if source == "realistic":
        raise ValueError("source='realistic' is a mixture: draw a source per volume with pick_source()")
    raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")


def pick_source(rng: np.random.Generator) -> str:
    """One source of :data:`TRAINING_MIX`, drawn with its probability."""
    names = [name for name, _ in TRAINING_MIX]
    weights = np.array([w for _, w in TRAINING_MIX])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


@functools.lru_cache(maxsize=len(NATURAL_IMAGES))
def _load_natural(name: str) -> np.ndarray:
    image = np.asarray(getattr(skdata, name)(), dtype=np.float64)
    if image.ndim == 3:  # RGB(A) -> luminance
        image = image[..., :3] @ np.array([0.2126, 0.7152, 0.0722])
    image -= image.min()
    return image / max(image.max(), 1e-12)


def _outline(box: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random smooth object outline in ``[0, 1]``: an ellipse whose radius wobbles with the angle, soft edge."""
    h, w = box
    y = np.linspace(-1.0, 1.0, h)[:, None]
    x = np.linspace(-1.0, 1.0, w)[None, :]
    ry, rx = rng.uniform(0.7, 0.98), rng.uniform(0.7, 0.98)
    angle = np.arctan2(y / ry, x / rx)
    wobble = np.ones_like(angle)
    for order in range(2, 6):
        wobble += rng.uniform(-0.06, 0.06) * np.cos(order * angle + rng.uniform(0, 2 * math.pi))
    radius = np.sqrt((y / ry) ** 2 + (x / rx) ** 2) / wobble
    edge = 1.5 / max(h, w)
    return 1.0 / (1.0 + np.exp((radius - 1.0) / edge))


def _natural(num_slices: int, box: tuple[int, int], rng: np.random.Generator, volume_index: int) -> np.ndarray:
    image = _load_natural(NATURAL_IMAGES[volume_index % len(NATURAL_IMAGES)])
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = np.rot90(image, int(rng.integers(4)))
    outline = _outline(box, rng)
    side = min(image.shape)
    slices = []
    for _ in range(num_slices):
        crop = int(side * rng.uniform(0.45, 1.0))
        top = int(rng.integers(0, image.shape[0] - crop + 1))
        left = int(rng.integers(0, image.shape[1] - crop + 1))
        patch = image[top : top + crop, left : left + crop]
        patch = sktransform.rotate(patch, rng.uniform(-20.0, 20.0), order=1, mode="reflect")
        patch = sktransform.resize(patch, box, order=1, anti_aliasing=True, mode="reflect")
        # a tissue-like floor (no black holes inside the object) and a smooth intensity falloff
        slices.append((rng.uniform(0.05, 0.3) + patch) * outline)
    out = np.clip(np.stack(slices), 0.0, None)
    return out / max(out.max(), 1e-12)


_DICOM_FILES = {"abdomen": "examples_overlay.dcm", "mr_small": "MR_small.dcm"}


@functools.lru_cache(maxsize=2)
def _load_dicom(source: str) -> np.ndarray:
    try:
        import pydicom
        from pydicom.data import get_testdata_file
    except ImportError as err:
        raise ImportError(f"source={source!r} needs pydicom (pip install pydicom)") from err
    path = get_testdata_file(_DICOM_FILES[source], download=False)
    if path is None:
        raise ImportError(f"source={source!r}: pydicom's test file {_DICOM_FILES[source]} is missing")
    image = np.asarray(pydicom.dcmread(path).pixel_array, dtype=np.float64)
    image -= image.min()
    return image / max(image.max(), 1e-12)


def _dicom_slices(source: str, num_slices: int, box: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    image = _load_dicom(source)
    out = []
    for s in range(num_slices):
        view = image[:, ::-1] if s % 2 else image  # slices: the image and its mirror, slightly rotated
        rotated = sktransform.rotate(view, rng.uniform(-6.0, 6.0), order=1, mode="constant", resize=True)
        out.append(_fit(rotated, box, rng.uniform(0.92, 1.0)))
    out = np.clip(np.stack(out), 0.0, None)
    return out / max(out.max(), 1e-12)
