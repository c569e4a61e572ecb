"""MONAI-style transforms for the MRI pipeline: array transforms and dictionary (``...d``) wrappers.

Array transforms do the work on one value; each dictionary transform wraps one, takes ``keys`` plus its *output*
key names as constructor arguments (never built by string concatenation, unlike MONAI's ``key + "_masked"``), copies
the input dict and returns a new one. Errors from a dictionary transform name the transform and the key. Aliases
``XD = XDict = Xd`` follow MONAI (Cardoso et al., "MONAI: An open-source framework for deep learning in healthcare",
arXiv 2211.02701; ``monai/apps/reconstruction/transforms``).

Values follow :mod:`recon.ops.fft`: complex64 k-space ``[..., C, H, W]`` (coils at ``-3``), real masks broadcastable
to it. :class:`ToMonaiComplex` / :class:`FromMonaiComplex` / :class:`FromMonaiMask` convert at the boundary with
MONAI's layout, where complex values are a trailing dimension of 2 (``[..., C, H, W, 2]``) and line masks are
``[1, ..., 1, W, 1]``. MetaTensors and numpy arrays are accepted and turned into plain tensors.

Pipeline sketch (fastMRI's ``VarNetDataTransform`` in pieces; Zbontar et al., arXiv 1811.08839)::

    Compose([
        LoadFastMRId(keys="path", slice_key="slice_num"),
        ApplyMaskd(keys="kspace", mask_func=create_mask_for_mask_type("equispaced_fraction", [0.08], [4]),
                   output_keys="masked_kspace", attrs_key="attrs"),
        EstimateCoilMapsd(keys="masked_kspace", output_keys="sens_maps"),
        KspaceNormalized(keys=["masked_kspace", "kspace", "target"], ref_key="masked_kspace"),
    ])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import MAX_SEED, TransformBackends, ensure_tuple

from recon.data.keys import Challenge, SampleKey
from recon.data.mri_data import FastMRISample, read_slice, read_volume
from recon.data.subsample import MaskFunc, SeedType, apply_mask, num_low_frequencies_from_mask, seed_from_fname
from recon.ops.coils import estimate_sens_maps, rss
from recon.ops.fft import ifft2c, to_complex, to_real_pair

__all__ = [
    "ApplyMask",
    "ApplyMaskD",
    "ApplyMaskDict",
    "ApplyMaskd",
    "EstimateCoilMaps",
    "EstimateCoilMapsD",
    "EstimateCoilMapsDict",
    "EstimateCoilMapsd",
    "FromMonaiComplex",
    "FromMonaiComplexD",
    "FromMonaiComplexDict",
    "FromMonaiComplexd",
    "FromMonaiMask",
    "FromMonaiMaskD",
    "FromMonaiMaskDict",
    "FromMonaiMaskd",
    "KspaceNormalize",
    "KspaceNormalizeD",
    "KspaceNormalizeDict",
    "KspaceNormalized",
    "LoadFastMRI",
    "LoadFastMRID",
    "LoadFastMRIDict",
    "LoadFastMRId",
    "SampleToDict",
    "ToMonaiComplex",
    "ToMonaiComplexD",
    "ToMonaiComplexDict",
    "ToMonaiComplexd",
]


def _as_tensor(x: Any, name: str = "input") -> torch.Tensor:
    """MetaTensor / ndarray / tensor -> plain tensor (shares memory where possible)."""
    if isinstance(x, MetaTensor):
        return x.as_tensor()
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a tensor or numpy array; got {type(x).__name__}")


def _as_complex(x: Any, who: str) -> torch.Tensor:
    t = _as_tensor(x)
    if not torch.is_complex(t):
        raise ValueError(
            f"{who} expects complex k-space [..., H, W]; got dtype {t.dtype} shape {tuple(t.shape)} "
            "(use FromMonaiComplex for a [..., 2] layout)"
        )
    return t


def _output_keys(keys: tuple[Hashable, ...], output_keys: KeysCollection | None, who: str) -> tuple[Hashable, ...]:
    if output_keys is None:
        return keys
    out = ensure_tuple(output_keys)
    if len(out) != len(keys):
        raise ValueError(f"{who}: output_keys {out} must have one entry per key in {keys}")
    return out


class _KeyErrorContext:
    """Re-raise ``ValueError`` / ``TypeError`` as ``ValueError`` naming the dictionary transform and the key."""

    def __init__(self, transform: object, key: Hashable) -> None:
        self.name = type(transform).__name__
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is not None and issubclass(exc_type, ValueError | TypeError):
            raise ValueError(f"transform `{self.name}`, key `{self.key}`: {exc}") from exc
        return False


# ----------------------------------------------------------------------------------------------------------------
# Loading


class LoadFastMRI(Transform):
    """Read a slice (or, with ``slice_num=None``, a whole volume) of a fastMRI file.

    Args:
        challenge: ``"multicoil"``, ``"singlecoil"`` or ``None`` (inferred from the k-space rank).
        check_finite: Raise on NaN / Inf values.
    """

    def __init__(self, challenge: str | Challenge | None = None, check_finite: bool = True) -> None:
        self.challenge = challenge
        self.check_finite = check_finite

    def __call__(self, path: str | os.PathLike, slice_num: int | None = None) -> FastMRISample:
        """Returns a :class:`~recon.data.mri_data.FastMRISample` (``slice_num=-1`` for a whole volume, whose k-space is
        ``[S, (C,) H, W]``)."""
        if slice_num is None:
            vol = read_volume(path, self.challenge, self.check_finite)
            return FastMRISample(vol.kspace, vol.mask, vol.target, vol.attrs, vol.fname, -1)
        return read_slice(path, int(slice_num), self.challenge, self.check_finite)


class SampleToDict(Transform):
    """:class:`~recon.data.mri_data.FastMRISample` -> dict, with the key names as arguments.

    Put it first in a ``Compose`` given to :class:`~recon.data.mri_data.SliceDataset` so that dictionary transforms
    can follow. The sample is a tuple, which MONAI's ``Compose`` would map over item by item: build it with
    ``Compose([...], map_items=False)``. ``None`` fields (no mask, no target) are left out.
    """

    def __init__(
        self,
        kspace_key: str = SampleKey.KSPACE,
        mask_key: str = SampleKey.MASK,
        target_key: str = SampleKey.TARGET,
        attrs_key: str = SampleKey.ATTRS,
        fname_key: str = SampleKey.FILENAME,
        slice_key: str = SampleKey.SLICE,
    ) -> None:
        self.names = (kspace_key, mask_key, target_key, attrs_key, fname_key, slice_key)

    def __call__(self, sample: FastMRISample) -> dict[Hashable, Any]:
        if not isinstance(sample, tuple) or len(sample) != len(FastMRISample._fields):
            raise TypeError(f"SampleToDict expects a FastMRISample; got {type(sample).__name__}")
        return {name: value for name, value in zip(self.names, sample, strict=True) if value is not None}


class LoadFastMRId(MapTransform):
    """Dictionary wrapper of :class:`LoadFastMRI`: reads the file at ``d[key]`` into the output keys.

    Args:
        keys: Key holding the file path (one key).
        slice_key: Key holding the slice index; ``None`` (or a missing entry) loads the whole volume.
        kspace_key: Output key of the complex k-space.
        mask_key: Output key of the stored mask (left out when the file has none).
        target_key: Output key of the target (left out when the file has none).
        attrs_key: Output key of the attributes dict.
        fname_key: Output key of the file name.
        challenge: See :class:`LoadFastMRI`.
        check_finite: See :class:`LoadFastMRI`.
        allow_missing_keys: Skip missing path keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection = SampleKey.PATH,
        slice_key: str | None = SampleKey.SLICE,
        kspace_key: str = SampleKey.KSPACE,
        mask_key: str = SampleKey.MASK,
        target_key: str = SampleKey.TARGET,
        attrs_key: str = SampleKey.ATTRS,
        fname_key: str = SampleKey.FILENAME,
        challenge: str | Challenge | None = None,
        check_finite: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"LoadFastMRId reads one path key; got {self.keys}")
        self.slice_key = slice_key
        self.loader = LoadFastMRI(challenge, check_finite)
        self.to_dict = SampleToDict(kspace_key, mask_key, target_key, attrs_key, fname_key, slice_key or "slice_num")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            slice_num = d.get(self.slice_key) if self.slice_key is not None else None
            with _KeyErrorContext(self, key):
                sample = self.loader(d[key], None if slice_num is None else int(slice_num))
            loaded = self.to_dict(sample)
            if slice_num is None:
                loaded.pop(self.to_dict.names[-1], None)
            d.update(loaded)
        return d


# ----------------------------------------------------------------------------------------------------------------
# Masking


class ApplyMask(RandomizableTransform):
    """Undersample complex k-space with a mask function (:func:`recon.data.subsample.apply_mask`).

    Randomness is MONAI's: each call draws a seed from ``self.R`` (set by :meth:`set_random_state`) and passes it to
    the mask function, whose own generator is left untouched. With ``seed_from_fname=True`` and a file name, the
    seed is fastMRI's per-file ``tuple(map(ord, fname))`` instead, so validation masks are fixed per volume.

    Args:
        mask_func: A :class:`~recon.data.subsample.MaskFunc` (or any callable with its interface).
        padding: ``(left, right)`` acquired-column range; columns outside are unsampled.
        seed_from_fname: Use the file name as seed when given.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        mask_func: MaskFunc | Callable[..., tuple[torch.Tensor, int]],
        padding: tuple[int, int] | None = None,
        seed_from_fname: bool = False,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        if not callable(mask_func):
            raise TypeError(f"ApplyMask: mask_func must be callable; got {type(mask_func).__name__}")
        self.mask_func = mask_func
        self.padding = padding
        self.seed_from_fname = seed_from_fname
        self._seed: int | None = None

    def randomize(self, data: Any = None) -> None:
        """Draw the seed of the next mask from ``self.R``."""
        self._seed = int(self.R.randint(MAX_SEED, dtype="uint32"))

    def __call__(
        self,
        kspace: Any,
        fname: str | None = None,
        padding: tuple[int, int] | None = None,
        randomize: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Mask ``kspace [..., H, W]``.

        Args:
            kspace: Complex k-space.
            fname: File name, for ``seed_from_fname``.
            padding: Overrides the constructor's ``padding``.
            randomize: Draw a new seed (``False`` reuses the last one: same mask for several inputs).

        Returns:
            ``(masked_kspace, mask, num_low_frequencies)``.
        """
        kspace = _as_complex(kspace, type(self).__name__)
        seed: SeedType
        if self.seed_from_fname and fname is not None:
            seed = seed_from_fname(str(fname))
        else:
            if randomize or self._seed is None:
                self.randomize()
            seed = self._seed
        return apply_mask(kspace, self.mask_func, seed=seed, padding=padding or self.padding)


class ApplyMaskd(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`ApplyMask`; one mask per call, shared by all ``keys``.

    Args:
        keys: Complex k-space keys to mask.
        mask_func: See :class:`ApplyMask`.
        output_keys: Where the masked k-space goes, one per key (default: overwrite ``keys``).
        mask_key: Output key of the mask ``[1, ..., W]``.
        num_low_frequencies_key: Output key of the number of fully sampled central lines.
        attrs_key: If set and present, its ``padding_left`` / ``padding_right`` (see
            :func:`recon.data.mri_data.parse_ismrmrd_header`) restrict the mask to the acquired columns.
        fname_key: Key of the file name used with ``seed_from_fname``.
        seed_from_fname: See :class:`ApplyMask`.
        allow_missing_keys: Skip missing keys instead of raising.
    """

    backend = ApplyMask.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask_func: MaskFunc | Callable[..., tuple[torch.Tensor, int]],
        output_keys: KeysCollection | None = SampleKey.MASKED_KSPACE,
        mask_key: str = SampleKey.MASK,
        num_low_frequencies_key: str = SampleKey.NUM_LOW_FREQUENCIES,
        attrs_key: str | None = None,
        fname_key: str = SampleKey.FILENAME,
        seed_from_fname: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.output_keys = _output_keys(self.keys, output_keys, type(self).__name__)
        self.mask_key = mask_key
        self.num_low_frequencies_key = num_low_frequencies_key
        self.attrs_key = attrs_key
        self.fname_key = fname_key
        self.masker = ApplyMask(mask_func, seed_from_fname=seed_from_fname)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> ApplyMaskd:
        super().set_random_state(seed, state)
        self.masker.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.masker.randomize(data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        padding = None
        attrs = d.get(self.attrs_key) if self.attrs_key is not None else None
        if isinstance(attrs, Mapping) and "padding_left" in attrs and "padding_right" in attrs:
            padding = (int(attrs["padding_left"]), int(attrs["padding_right"]))
        fname = d.get(self.fname_key)
        self.randomize()
        for key, out_key in self.key_iterator(d, self.output_keys):
            with _KeyErrorContext(self, key):
                masked, mask, num_low = self.masker(d[key], fname=fname, padding=padding, randomize=False)
            d[out_key] = masked
            d[self.mask_key] = mask
            d[self.num_low_frequencies_key] = num_low
        return d


# ----------------------------------------------------------------------------------------------------------------
# Coil maps and normalisation


class EstimateCoilMaps(Transform):
    """Coil sensitivity maps from the fully sampled centre (:func:`recon.ops.coils.estimate_sens_maps`).

    Args:
        method: ``"acs"`` or ``"espirit"``.
        num_low_frequencies: Default width of the fully sampled centre, used when the call gives none.
        **options: Method options passed to ``estimate_sens_maps`` (e.g. ``acs_region="box"`` for 2-D masks).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, method: str = "acs", num_low_frequencies: int | None = None, **options: Any) -> None:
        self.method = method
        self.num_low_frequencies = num_low_frequencies
        self.options = options

    def __call__(self, kspace: Any, num_low_frequencies: int | None = None, mask: Any | None = None) -> torch.Tensor:
        """Maps ``[..., C, H, W]`` for k-space ``[..., C, H, W]``.

        The centre width is ``num_low_frequencies``, else the constructor's, else derived from a line ``mask``
        (:func:`recon.data.subsample.num_low_frequencies_from_mask`).
        """
        kspace = _as_complex(kspace, type(self).__name__)
        num_low = num_low_frequencies if num_low_frequencies is not None else self.num_low_frequencies
        if num_low is None and mask is not None:
            num_low = num_low_frequencies_from_mask(_as_tensor(mask, "mask"))
        if num_low is None:
            raise ValueError("EstimateCoilMaps needs num_low_frequencies (argument, constructor or a mask)")
        return estimate_sens_maps(kspace, int(num_low), method=self.method, **self.options)


class EstimateCoilMapsd(MapTransform):
    """Dictionary wrapper of :class:`EstimateCoilMaps`.

    Args:
        keys: Complex k-space keys ``[..., C, H, W]`` (usually the masked k-space).
        output_keys: Where the maps go, one per key.
        num_low_frequencies_key: Key of the centre width (e.g. written by :class:`ApplyMaskd`); if absent, the
            constructor's ``num_low_frequencies`` is used, else the centre is found from ``d[mask_key]``.
        mask_key: Key of the line mask used as the last resort.
        method: See :class:`EstimateCoilMaps`.
        num_low_frequencies: See :class:`EstimateCoilMaps`.
        allow_missing_keys: Skip missing keys instead of raising.
        **options: See :class:`EstimateCoilMaps`.
    """

    backend = EstimateCoilMaps.backend

    def __init__(
        self,
        keys: KeysCollection = SampleKey.MASKED_KSPACE,
        output_keys: KeysCollection = SampleKey.SENS_MAPS,
        num_low_frequencies_key: str | None = SampleKey.NUM_LOW_FREQUENCIES,
        mask_key: str | None = SampleKey.MASK,
        method: str = "acs",
        num_low_frequencies: int | None = None,
        allow_missing_keys: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = _output_keys(self.keys, output_keys, type(self).__name__)
        self.num_low_frequencies_key = num_low_frequencies_key
        self.mask_key = mask_key
        self.estimator = EstimateCoilMaps(method, num_low_frequencies, **options)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        num_low = d.get(self.num_low_frequencies_key) if self.num_low_frequencies_key is not None else None
        mask = d.get(self.mask_key) if self.mask_key is not None else None
        for key, out_key in self.key_iterator(d, self.output_keys):
            with _KeyErrorContext(self, key):
                d[out_key] = self.estimator(d[key], None if num_low is None else int(num_low), mask)
        return d


class KspaceNormalize(Transform):
    """Scale k-space by a statistic of its zero-filled image, so that inputs have a comparable range.

    ``scale = stat(|F^-1 k|)`` (RSS over coils at ``coil_dim``), with ``stat`` the maximum (``mode="max"``) or the
    mean (``"mean"``); the output is ``k / scale``. Linear, so the same scale can be applied to targets and undone
    on outputs (fastMRI normalises its U-Net inputs by instance statistics instead, MONAI's tutorial by the mean and
    standard deviation of a reference, ``ReferenceBasedNormalizeIntensityd``).

    Args:
        mode: ``"max"`` or ``"mean"``.
        coil_dim: Coil dimension of the k-space, or ``None`` for single-coil.
        eps: Floor of the scale (an all-zero input gives ``scale = eps``).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, mode: str = "max", coil_dim: int | None = -3, eps: float = 1e-12) -> None:
        if mode not in ("max", "mean"):
            raise ValueError(f"KspaceNormalize: mode must be 'max' or 'mean'; got {mode!r}")
        self.mode = mode
        self.coil_dim = coil_dim
        self.eps = eps

    def compute_scale(self, kspace: Any) -> float:
        """The scale of ``kspace [..., (C,) H, W]`` (a Python float)."""
        image = ifft2c(_as_complex(kspace, type(self).__name__))
        magnitude = rss(image, dim=self.coil_dim) if self.coil_dim is not None else image.abs()
        stat = magnitude.max() if self.mode == "max" else magnitude.mean()
        return max(float(stat), self.eps)

    def __call__(self, kspace: Any, scale: float | None = None) -> tuple[torch.Tensor, float]:
        """Returns ``(kspace / scale, scale)``; ``scale`` is computed unless given."""
        scale = self.compute_scale(kspace) if scale is None else float(scale)
        return _as_tensor(kspace) / scale, scale


class KspaceNormalized(MapTransform):
    """Dictionary wrapper of :class:`KspaceNormalize`: one scale, from ``ref_key``, divides every key.

    Args:
        keys: Keys to scale (k-space, targets, images: anything linear in the data).
        ref_key: Complex k-space the scale is computed from (usually the masked k-space, available at test time).
        scale_key: Output key of the scale, to undo the normalisation later.
        output_keys: Where the scaled values go (default: overwrite ``keys``).
        mode: See :class:`KspaceNormalize`.
        coil_dim: See :class:`KspaceNormalize`.
        allow_missing_keys: Skip missing keys instead of raising.
    """

    backend = KspaceNormalize.backend

    def __init__(
        self,
        keys: KeysCollection,
        ref_key: str = SampleKey.MASKED_KSPACE,
        scale_key: str = SampleKey.SCALE,
        output_keys: KeysCollection | None = None,
        mode: str = "max",
        coil_dim: int | None = -3,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = _output_keys(self.keys, output_keys, type(self).__name__)
        self.ref_key = ref_key
        self.scale_key = scale_key
        self.normalizer = KspaceNormalize(mode, coil_dim)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.ref_key not in d:
            raise KeyError(
                f"Key `{self.ref_key}` (ref_key) of transform `{type(self).__name__}` was missing in the data"
            )
        with _KeyErrorContext(self, self.ref_key):
            scale = self.normalizer.compute_scale(d[self.ref_key])
        for key, out_key in self.key_iterator(d, self.output_keys):
            with _KeyErrorContext(self, key):
                d[out_key] = self.normalizer(d[key], scale)[0]
        d[self.scale_key] = scale
        return d


# ----------------------------------------------------------------------------------------------------------------
# MONAI layout conversions


class ToMonaiComplex(Transform):
    """Complex ``[...]`` -> real ``[..., 2]`` (real, imaginary): MONAI's and fastMRI's layout."""

    backend = [TransformBackends.TORCH]

    def __call__(self, x: Any) -> torch.Tensor:
        x = _as_tensor(x)
        if not torch.is_complex(x):
            raise ValueError(f"ToMonaiComplex expects a complex tensor; got dtype {x.dtype}")
        return to_real_pair(x)


class FromMonaiComplex(Transform):
    """Real ``[..., 2]`` (real, imaginary; MONAI / fastMRI layout) -> complex ``[...]`` (complex64 for float32)."""

    backend = [TransformBackends.TORCH]

    def __call__(self, x: Any) -> torch.Tensor:
        x = _as_tensor(x)
        if torch.is_complex(x) or x.ndim == 0 or x.shape[-1] != 2:
            raise ValueError(f"FromMonaiComplex expects a real [..., 2] tensor; got {x.dtype} {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.float()
        return to_complex(x)


class FromMonaiMask(Transform):
    """MONAI / fastMRI mask ``[..., W, 1]`` (trailing complex slot) -> ``recon`` mask ``[..., W]`` (float32)."""

    backend = [TransformBackends.TORCH]

    def __call__(self, mask: Any) -> torch.Tensor:
        mask = _as_tensor(mask)
        if mask.ndim < 2 or mask.shape[-1] != 1 or torch.is_complex(mask):
            raise ValueError(f"FromMonaiMask expects a real [..., W, 1] mask; got {mask.dtype} {tuple(mask.shape)}")
        return mask[..., 0].to(torch.float32)


class _ConvertD(MapTransform):
    """Shared dictionary wrapper of the layout conversions."""

    converter: Transform

    def __init__(
        self, keys: KeysCollection, output_keys: KeysCollection | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = _output_keys(self.keys, output_keys, type(self).__name__)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            with _KeyErrorContext(self, key):
                d[out_key] = self.converter(d[key])
        return d


class ToMonaiComplexd(_ConvertD):
    """Dictionary wrapper of :class:`ToMonaiComplex` (``keys``, optional ``output_keys``, ``allow_missing_keys``)."""

    backend = ToMonaiComplex.backend
    converter = ToMonaiComplex()


class FromMonaiComplexd(_ConvertD):
    """Dictionary wrapper of :class:`FromMonaiComplex` (``keys``, optional ``output_keys``, ``allow_missing_keys``)."""

    backend = FromMonaiComplex.backend
    converter = FromMonaiComplex()


class FromMonaiMaskd(_ConvertD):
    """Dictionary wrapper of :class:`FromMonaiMask` (``keys``, optional ``output_keys``, ``allow_missing_keys``)."""

    backend = FromMonaiMask.backend
    converter = FromMonaiMask()


LoadFastMRID = LoadFastMRIDict = LoadFastMRId
ApplyMaskD = ApplyMaskDict = ApplyMaskd
EstimateCoilMapsD = EstimateCoilMapsDict = EstimateCoilMapsd
KspaceNormalizeD = KspaceNormalizeDict = KspaceNormalized
ToMonaiComplexD = ToMonaiComplexDict = ToMonaiComplexd
FromMonaiComplexD = FromMonaiComplexDict = FromMonaiComplexd
FromMonaiMaskD = FromMonaiMaskDict = FromMonaiMaskd
