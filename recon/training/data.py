"""Training and validation slices from fully sampled fastMRI-style files, and reconstruction the way they were made.

One slice becomes a model input through the inference path (:func:`prepare_inputs`, which calls
:func:`recon.inference.prepare_batch`): the undersampled k-space ``y`` ``[C, H, W]``, its line mask, coil maps
estimated from the fully sampled centre of ``y`` (:func:`recon.ops.estimate_sens_maps`) and ``scale``, the maximum
(or mean) of the zero-filled RSS image; the model sees ``y / scale`` and its output returns to the file's units
through :func:`recon.inference.to_file_units` (validation and :func:`reconstruct`). Training targets are the file's
``reconstruction_rss`` (fastMRI's target: RSS of the fully sampled k-space at the recon matrix) divided by the same
scale, optionally centre-cropped (``DataConfig.crop``).

Masks: :class:`SliceMaskDataset` draws, for training, a mask family from ``DataConfig.mask_types`` and lets the
mask function draw an ``(acceleration, center_fraction)`` pair, all seeded by ``(seed, epoch, index)``; for
validation the choice is fixed per file and slice (fastMRI's per-file seed ``tuple(map(ord, fname))`` plus the
slice index), so every validation run scores the same inputs.
"""

from __future__ import annotations

import os
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from recon.config import DataConfig
from recon.data.mri_data import FastMRIDataError, SliceDataset
from recon.data.subsample import (
    MaskFunc,
    apply_mask,
    create_mask_for_mask_type,
    num_low_frequencies_from_mask,
    seed_from_fname,
)
from recon.inference import Preprocessing, check_precision, precision_context, prepare_batch, to_file_units
from recon.metrics import nmse, psnr, ssim
from recon.ops.coils import estimate_sens_maps
from recon.training.losses import center_crop

__all__ = ["SliceMaskDataset", "make_validator", "prepare_inputs", "reconstruct"]


def prepare_inputs(
    masked_kspace: torch.Tensor,
    mask: torch.Tensor,
    num_low_frequencies: int | None,
    data: DataConfig,
    sens_maps: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Model inputs for one undersampled multi-coil slice.

    Args:
        masked_kspace: complex k-space ``[C, H, W]``, zero off the mask.
        mask: line mask broadcastable to it (``[1, 1, W]`` or ``[W]``).
        num_low_frequencies: width of the fully sampled centre; ``None`` reads it off the mask.
        data: the data settings (coil-map method, scaling).
        sens_maps: coil maps ``[C, H, W]`` already estimated from this k-space's centre (e.g. cached); None
            estimates them.

    Returns:
        ``{"masked_kspace": y / scale [C, H, W], "mask": [1, 1, W], "sens_maps": [C, H, W], "scale": float}``, plus
        ``"noise_floor"`` (a float, in the units of ``y / scale``) when ``data.noise_floor`` is set.
    """
    if not torch.is_complex(masked_kspace) or masked_kspace.ndim != 3:
        raise ValueError(
            f"masked_kspace must be complex multi-coil k-space [C, H, W]; got {masked_kspace.dtype} "
            f"{tuple(masked_kspace.shape)}"
        )
    width = masked_kspace.shape[-1]
    if mask.numel() != width:
        raise ValueError(f"the mask must be a line mask of length W={width}; got shape {tuple(mask.shape)}")
    mask = mask.reshape(1, 1, width).to(torch.float32)
    if num_low_frequencies is None:
        num_low_frequencies = num_low_frequencies_from_mask(mask)
    if num_low_frequencies < 1:
        raise ValueError("the mask has no fully sampled centre, so coil maps cannot be estimated")
    if sens_maps is None:
        # from the k-space as read, as SliceMaskDataset's cache holds them, so cached and fresh maps are the same
        sens_maps = estimate_sens_maps(masked_kspace, int(num_low_frequencies), method=data.sens_method)
    batch = prepare_batch(
        masked_kspace[None], mask[None], int(num_low_frequencies), Preprocessing.from_settings(data), sens_maps[None]
    )
    scale = float(batch.scale[0])
    inputs = {"masked_kspace": batch.masked_kspace[0], "mask": mask, "sens_maps": sens_maps, "scale": scale}
    if batch.noise_floor is not None:
        inputs["noise_floor"] = float(batch.noise_floor[0])
    return inputs


def _file_units(image: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
    """The reported magnitude ``[H, W]``, in the units of the file, of a one-slice model output ``[1, H, W]`` for
    the inputs of :func:`prepare_inputs` (:func:`recon.inference.to_file_units`)."""
    return to_file_units(image, inputs["scale"], inputs.get("noise_floor"))[0]


def reconstruct(
    model: nn.Module,
    masked_kspace: torch.Tensor,
    mask: torch.Tensor,
    data: DataConfig,
    num_low_frequencies: int | None = None,
    precision: str = "fp32",
    channels_last: bool = True,
) -> torch.Tensor:
    """Reconstruct undersampled slices with a trained model, the way it was trained.

    Args:
        model: a recon model (``model(y, mask, sens) -> complex [B, H, W]``), e.g. from
            :func:`recon.weights.load_default_model`.
        masked_kspace: complex ``[C, H, W]`` or ``[S, C, H, W]`` (one line mask shared by the slices).
        mask: line mask with ``W`` entries.
        data: the data settings the model was trained with (``recon.weights.default_config(name).data``).
        num_low_frequencies: width of the fully sampled centre; ``None`` reads it off the mask.
        precision: ``"fp32"`` or ``"bf16"`` (:func:`recon.inference.make_reconstructor`).
        channels_last: put the model's conv weights in channels-last (in place), as
            :func:`recon.inference.prepare_model`.

    Returns:
        Magnitude images ``[H, W]`` or ``[S, H, W]`` (float32, in the units of the input), not cropped.
    """
    check_precision(precision)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    single = masked_kspace.ndim == 3
    volume = masked_kspace.unsqueeze(0) if single else masked_kspace
    params = next(model.parameters(), None)
    device = params.device if params is not None else torch.device("cpu")
    out = []
    with torch.no_grad():
        for kspace in volume:
            inputs = prepare_inputs(kspace, mask, num_low_frequencies, data)
            with precision_context(precision, device):  # the model only: coil-map estimation stays fp32
                image = model(
                    inputs["masked_kspace"].unsqueeze(0).to(device),
                    inputs["mask"].unsqueeze(0).to(device),
                    inputs["sens_maps"].unsqueeze(0).to(device),
                )
            out.append(_file_units(image, inputs).float().cpu())
    images = torch.stack(out)
    return images[0] if single else images


def _stable_index(text: str, n: int) -> int:
    return zlib.crc32(text.encode("utf-8")) % n


class SliceMaskDataset(torch.utils.data.Dataset):
    """Slices of a folder of fully sampled multi-coil files, undersampled on the fly (see the module docstring).

    Items are dicts with ``masked_kspace`` ``[C, H, W]``, ``mask`` ``[1, 1, W]``, ``sens_maps`` ``[C, H, W]``,
    ``target`` ``[h, w]`` (all scaled by ``1 / scale``), ``scale``, ``acceleration`` (requested), ``mask_type``,
    ``fname`` and ``slice_num``.

    Args:
        root: folder of ``.h5`` files with ``kspace`` and ``reconstruction_rss``.
        data: the data settings.
        seed: seed of the training masks.
        train: random masks per epoch (``True``) or fixed validation masks (``False``).
        sens_cache_bytes: memory for coil maps kept between epochs (least recently used dropped first; 0: none).
            The maps depend only on the slice and the width of the fully sampled centre (they are estimated from
            the centre columns alone), so each is computed once per slice and centre width. Each DataLoader worker
            holds its own cache.

    Raises:
        ValueError: for an empty folder; :class:`~recon.data.mri_data.FastMRIDataError` (naming the file) for an
            invalid file, a file without target, or an already undersampled file.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        data: DataConfig,
        seed: int = 0,
        train: bool = True,
        sens_cache_bytes: int = 1 << 30,
    ) -> None:
        self.slices = SliceDataset(root, challenge=data.challenge)
        if len(self.slices) == 0:
            raise ValueError(f"{root}: no .h5 / .hdf5 files with slices found")
        for info in self.slices.volumes:
            if info.target_key is None:
                raise FastMRIDataError(info.path, "reconstruction_rss", "missing target; training needs targets")
            if info.has_mask:
                raise FastMRIDataError(info.path, "mask", "already undersampled; training needs fully sampled k-space")
        self.data = data
        self.seed = seed
        self.train = train
        self.epoch = 0
        self.sens_cache_bytes = int(sens_cache_bytes)
        self._sens_cache: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._sens_cache_used = 0
        self.mask_funcs: list[MaskFunc] = [
            create_mask_for_mask_type(t, data.center_fractions, data.accelerations) for t in data.mask_types
        ]

    def __len__(self) -> int:
        return len(self.slices)

    def set_epoch(self, epoch: int) -> None:
        """Select the masks of ``epoch`` (called by :func:`recon.training.train`)."""
        self.epoch = int(epoch)

    def _mask_choice(self, index: int, fname: str, slice_num: int) -> tuple[int, Any]:
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            return int(rng.integers(len(self.mask_funcs))), int(rng.integers(2**31 - 1))
        return _stable_index(f"{fname}/{slice_num}", len(self.mask_funcs)), (*seed_from_fname(fname), slice_num)

    def _cached_sens(self, index: int, masked: torch.Tensor, num_low: int) -> torch.Tensor | None:
        if self.sens_cache_bytes <= 0 or num_low < 1:
            return None  # prepare_inputs estimates (or refuses a mask without a centre)
        key = (index, int(num_low))
        sens = self._sens_cache.get(key)
        if sens is not None:
            self._sens_cache.move_to_end(key)
            return sens
        sens = estimate_sens_maps(masked, int(num_low), method=self.data.sens_method)
        size = sens.numel() * sens.element_size()
        if size <= self.sens_cache_bytes:
            while self._sens_cache_used + size > self.sens_cache_bytes:
                _, old = self._sens_cache.popitem(last=False)
                self._sens_cache_used -= old.numel() * old.element_size()
            self._sens_cache[key] = sens
            self._sens_cache_used += size
        return sens

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.slices[index]
        kind, mask_seed = self._mask_choice(index, sample.fname, sample.slice_num)
        mask_func = self.mask_funcs[kind]
        padding = (int(sample.attrs["padding_left"]), int(sample.attrs["padding_right"]))
        masked, mask, num_low = apply_mask(sample.kspace, mask_func, seed=mask_seed, padding=padding)
        item = prepare_inputs(masked, mask, num_low, self.data, self._cached_sens(index, masked, num_low))
        target = sample.target
        if self.data.crop is not None:
            target = center_crop(target, tuple(self.data.crop))
        item["target"] = target / item["scale"]
        item.update(
            mask_type=self.data.mask_types[kind],
            acceleration=float(mask.numel() / mask.sum().clamp_min(1)),
            fname=sample.fname,
            slice_num=sample.slice_num,
        )
        return item


def make_validator(dataset: SliceMaskDataset) -> Callable[[nn.Module], dict[str, float]]:
    """A validation hook for :func:`recon.training.train`: fastMRI SSIM / PSNR / NMSE per volume, averaged.

    Predictions are centre-cropped to the target (the recon matrix, or ``DataConfig.crop``) and both are returned to
    the file's units before scoring, so the numbers follow :mod:`recon.metrics` (volume data range).
    """

    def validate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        preds: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
        targets: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
        for i in range(len(dataset)):
            item = dataset[i]
            image = model(
                item["masked_kspace"].unsqueeze(0).to(device),
                item["mask"].unsqueeze(0).to(device),
                item["sens_maps"].unsqueeze(0).to(device),
            )
            target = item["target"]
            preds[item["fname"]][item["slice_num"]] = center_crop(_file_units(image, item).cpu(), target.shape)
            targets[item["fname"]][item["slice_num"]] = target * item["scale"]
        scores = []
        for fname, by_slice in preds.items():
            order = sorted(by_slice)
            p = torch.stack([by_slice[s] for s in order])
            t = torch.stack([targets[fname][s] for s in order])
            scores.append((ssim(t, p), psnr(t, p), nmse(t, p)))
        mean = np.mean(np.array(scores), axis=0)
        return {"val_ssim": float(mean[0]), "val_psnr": float(mean[1]), "val_nmse": float(mean[2])}

    return validate
