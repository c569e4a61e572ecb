"""Small image classification datasets that ship with installed packages, so examples and tests need no download.

* ``digits``: scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels), 10 classes;
* ``lfw``: scikit-image's ``lfw_subset`` (200 crops of 25x25 px: 100 faces, then 100 non-faces), 2 classes;
* ``arrow-pointing``: the APE task of :mod:`recvision.data.arrow_pointing`, generated at the requested size.

Each loader returns a :class:`SplitDatasets` whose splits yield ``(PIL.Image RGB, label)``, ready for a timm
transform. Splits are stratified and fixed by ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .arrow_pointing import ArrowPointingDataset

__all__ = ["BUILTIN_DATASETS", "ImageListDataset", "SplitDatasets", "load_builtin", "stratified_split"]


class ImageListDataset(Dataset):
    """``(image, label)`` pairs from a sequence of uint8 arrays ``[H, W]`` (grey) or ``[H, W, 3]``, as RGB PIL images.

    Args:
        images: the images (any indexable of arrays).
        labels: integer labels, one per image.
        transform: optional callable applied to the PIL image.
    """

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[int], transform: Callable | None = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"got {len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = [int(label) for label in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(np.asarray(self.images[index])).convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class _APEAsPIL(Dataset):
    """An :class:`ArrowPointingDataset` whose images come out as RGB PIL images (for timm's transforms)."""

    def __init__(self, dataset: ArrowPointingDataset, transform: Callable | None = None) -> None:
        self.dataset = dataset
        self.labels = [dataset.label(i) for i in range(len(dataset))]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        image = Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, label


@dataclass
class SplitDatasets:
    """Train and validation splits of one dataset plus what a training script needs to know about it.

    Attributes:
        train: training split; its ``transform`` attribute is set by the caller.
        val: validation split; same.
        class_names: one name per class index.
        augment: whether random training augmentation suits the data (it does not for APE, where a crop or a flip
            changes the answer, nor for the tiny digits).
    """

    train: Dataset
    val: Dataset
    class_names: list[str]
    augment: bool = False


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)`` with ``val_fraction`` of every class (at least one) in ``val``, fixed by ``seed``."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if len(members) < 2:
            raise ValueError(f"class {cls} has {len(members)} example(s); a train/val split needs at least 2")
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return sorted(train), sorted(val)


def _load_digits(img_size: int, seed: int, val_fraction: float) -> SplitDatasets:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 grey levels -> 0..255
    train, val = stratified_split(digits.target, val_fraction, seed)
    return SplitDatasets(
        ImageListDataset(images[train], digits.target[train]),
        ImageListDataset(images[val], digits.target[val]),
        [str(d) for d in range(10)],
    )


def _load_lfw(img_size: int, seed: int, val_fraction: float) -> SplitDatasets:
    from skimage.data import lfw_subset

    images = (lfw_subset() * 255).round().astype(np.uint8)  # [200, 25, 25] in [0, 1]
    labels = np.array([1] * 100 + [0] * 100)  # scikit-image documents: the first 100 are faces
    train, val = stratified_split(labels, val_fraction, seed)
    return SplitDatasets(
        ImageListDataset(images[train], labels[train]),
        ImageListDataset(images[val], labels[val]),
        ["non-face", "face"],
        augment=True,
    )


# sizes of the generated APE splits in the fine-tuning script; the benchmark builds its own
APE_TRAIN_SAMPLES = 4096
APE_VAL_SAMPLES = 1024


def _load_arrow_pointing(img_size: int, seed: int, val_fraction: float) -> SplitDatasets:
    # distinct seeds per split, like the reference protocol (train 43, val 100042, test 200042)
    return SplitDatasets(
        _APEAsPIL(ArrowPointingDataset(APE_TRAIN_SAMPLES, img_size, seed=43 + seed)),
        _APEAsPIL(ArrowPointingDataset(APE_VAL_SAMPLES, img_size, seed=100042 + seed)),
        ["misses", "hits"],
    )


BUILTIN_DATASETS: dict[str, Callable[[int, int, float], SplitDatasets]] = {
    "digits": _load_digits,
    "lfw": _load_lfw,
    "arrow-pointing": _load_arrow_pointing,
}


def load_builtin(name: str, img_size: int = 64, seed: int = 0, val_fraction: float = 0.2) -> SplitDatasets:
    """Load the built-in dataset ``name`` (``digits``, ``lfw`` or ``arrow-pointing``).

    Args:
        name: dataset name.
        img_size: image side for generated data (``arrow-pointing``); the others keep their native size and are
            resized by the transform.
        seed: split seed (and offset of APE's generator seeds).
        val_fraction: share of each class held out for validation (``digits``, ``lfw``).
    """
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"unknown built-in dataset {name!r}; choose one of {sorted(BUILTIN_DATASETS)}")
    return BUILTIN_DATASETS[name](img_size, seed, val_fraction)
