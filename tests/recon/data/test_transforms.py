"""Tests of the MONAI-style transforms (``recon.data.transforms``), including a chain with MONAI's own transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.apps.reconstruction.fastmri_reader import FastMRIReader
from monai.apps.reconstruction.transforms.dictionary import EquispacedKspaceMaskd, ExtractDataKeyFromMetaKeyd
from monai.transforms import Compose, LoadImaged

from recon.data import transforms as T
from recon.data.mri_data import SliceDataset, read_slice
from recon.data.subsample import (
    RandomMaskFunc,
    create_mask_for_mask_type,
    num_low_frequencies_from_mask,
    seed_from_fname,
)
from recon.layers.dc import HardDataConsistency
from recon.ops.coils import rss, sens_expand, sens_reduce
from recon.ops.fft import ifft2c


def _sample_dict(path: Path, slice_num: int = 1) -> dict:
    return T.LoadFastMRId(keys="path")({"path": path, "slice_num": slice_num})


def test_monai_chain_feeds_hard_dc(synthetic_file: Path) -> None:
    """MONAI's LoadImaged(FastMRIReader) -> EquispacedKspaceMaskd -> ours -> hard DC from recon.layers.dc."""
    pipeline = Compose(
        [
            LoadImaged(keys=["kspace"], reader=FastMRIReader, image_only=False, dtype=np.complex64),
            ExtractDataKeyFromMetaKeyd(keys=["reconstruction_rss"], meta_key="kspace_meta_dict"),
            EquispacedKspaceMaskd(keys=["kspace"], center_fractions=[0.08], accelerations=[4]),
            T.FromMonaiComplexd(keys="kspace_masked", output_keys="masked_kspace"),
            T.FromMonaiMaskd(keys="mask"),
            T.EstimateCoilMapsd(keys="masked_kspace", output_keys="sens_maps", num_low_frequencies_key=None),
            T.KspaceNormalized(keys=["masked_kspace", "kspace"], ref_key="masked_kspace", output_keys=["y", "full"]),
        ]
    ).set_random_state(0)
    d = pipeline({"kspace": str(synthetic_file)})
    y, mask, sens, full = d["y"], d["mask"], d["sens_maps"], d["full"]
    slices, coils, height, width = full.shape
    assert y.dtype == torch.complex64 and y.shape == full.shape and type(y) is torch.Tensor
    assert mask.shape == (1, 1, 1, width) and sens.shape == full.shape
    sampled = mask.bool().expand_as(y)
    assert torch.equal(y[sampled], full[sampled]) and torch.all(y[~sampled] == 0)
    # normalised: the zero-filled RSS peaks at 1
    assert rss(ifft2c(y)).max().item() == pytest.approx(1.0, rel=1e-5)
    # the estimated maps are RSS-normalised where the object is
    power = (sens.abs() ** 2).sum(dim=-3)
    obj = rss(ifft2c(full)) > 0.2
    torch.testing.assert_close(power[obj], torch.ones_like(power[obj]), atol=1e-3, rtol=0)

    # a network's k-space prediction: SENSE-expanded zero-filled image plus a perturbation
    prediction = sens_expand(sens_reduce(y, sens), sens) + 0.01 * torch.randn_like(y)
    out = HardDataConsistency()(prediction, y, mask)
    assert torch.equal(out[sampled], y[sampled])  # sampled k-space unchanged, bit for bit
    assert torch.equal(out[~sampled], prediction[~sampled])


def test_apply_mask_reproducible_with_set_random_state(synthetic_file: Path) -> None:
    kspace = read_slice(synthetic_file, 0).kspace
    masker = T.ApplyMask(RandomMaskFunc([0.08], [4]))
    first = [masker(kspace)[1] for _ in range(3)]
    assert not torch.equal(first[0], first[1])
    masker.set_random_state(5)
    a = [masker(kspace)[1] for _ in range(3)]
    masker.set_random_state(5)
    b = [masker(kspace)[1] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # fastMRI's per-file seed: the same mask as calling the mask function with tuple(map(ord, fname))
    by_name = T.ApplyMask(RandomMaskFunc([0.08], [4]), seed_from_fname=True)
    masked, mask, num_low = by_name(kspace, fname="file1.h5")
    expected, expected_low = RandomMaskFunc([0.08], [4])(kspace.shape, seed=seed_from_fname("file1.h5"))
    assert torch.equal(mask, expected) and num_low == expected_low
    assert torch.equal(masked, torch.where(mask.bool(), kspace, torch.zeros((), dtype=kspace.dtype)))


def test_apply_maskd_shares_one_mask_and_names_outputs(synthetic_file: Path) -> None:
    d = _sample_dict(synthetic_file)
    d["kspace2"] = d["kspace"] * 2
    t = T.ApplyMaskd(
        keys=["kspace", "kspace2"],
        mask_func=create_mask_for_mask_type("random", [0.08], [4]),
        output_keys=["m1", "m2"],
        mask_key="the_mask",
        num_low_frequencies_key="nlf",
        attrs_key="attrs",
    ).set_random_state(1)
    out = t(d)
    assert "kspace" in out and torch.equal(out["kspace"], d["kspace"])  # inputs kept, input dict not modified
    assert "m1" not in d
    assert torch.equal(out["m2"], out["m1"] * 2)  # one mask for both keys
    assert out["the_mask"].shape == (1, 1, d["kspace"].shape[-1]) and out["nlf"] == 2
    with pytest.raises(ValueError, match="one entry per key"):
        T.ApplyMaskd(keys=["a", "b"], mask_func=RandomMaskFunc([0.1], [4]), output_keys=["x"])
    assert T.ApplyMaskD is T.ApplyMaskDict is T.ApplyMaskd


def test_errors_name_transform_and_key() -> None:
    t = T.EstimateCoilMapsd(keys="masked_kspace", num_low_frequencies=2)
    with pytest.raises(KeyError, match=r"Key `masked_kspace` of transform `EstimateCoilMapsd` was missing"):
        t({})
    with pytest.raises(ValueError, match=r"transform `EstimateCoilMapsd`, key `masked_kspace`: .*complex"):
        t({"masked_kspace": torch.zeros(2, 8, 8)})
    with pytest.raises(ValueError, match=r"transform `FromMonaiComplexd`, key `x`: .*\[\.\.\., 2\]"):
        T.FromMonaiComplexd(keys="x")({"x": torch.zeros(3, 4)})
    with pytest.raises(KeyError, match=r"`ref` \(ref_key\) of transform `KspaceNormalized`"):
        T.KspaceNormalized(keys="x", ref_key="ref")({"x": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="needs num_low_frequencies"):
        T.EstimateCoilMaps()(torch.zeros(2, 8, 8, dtype=torch.complex64))


def test_monai_layout_round_trip() -> None:
    x = torch.randn(2, 3, 5, 6, dtype=torch.complex64)
    pair = T.ToMonaiComplex()(x)
    assert pair.shape == (2, 3, 5, 6, 2) and pair.dtype == torch.float32
    assert torch.equal(T.FromMonaiComplex()(pair), x)
    d = T.ToMonaiComplexd(keys="x", output_keys="x2")({"x": x})
    assert torch.equal(T.FromMonaiComplexd(keys="x2")(d)["x2"], x)
    assert T.FromMonaiMask()(torch.ones(1, 1, 1, 6, 1)).shape == (1, 1, 1, 6)
    with pytest.raises(ValueError, match="complex"):
        T.ToMonaiComplex()(torch.zeros(3))


def test_dictionary_pipeline_on_slice_dataset(synthetic_dir: Path) -> None:
    mask_func = create_mask_for_mask_type("equispaced_fraction", [0.08], [4])
    pipeline = Compose(
        [
            T.SampleToDict(),
            T.ApplyMaskd(keys="kspace", mask_func=mask_func, attrs_key="attrs", seed_from_fname=True),
            T.EstimateCoilMapsd(keys="masked_kspace", output_keys="sens_maps"),
            T.KspaceNormalized(keys=["masked_kspace", "kspace", "target"], ref_key="masked_kspace"),
        ],
        map_items=False,
    )
    ds = SliceDataset(synthetic_dir, transform=pipeline)
    d0, d1 = ds[0], ds[1]
    assert torch.equal(d0["mask"], d1["mask"])  # one mask per volume (seed from the file name)
    assert d0["num_low_frequencies"] == 2 and d0["sens_maps"].shape == d0["kspace"].shape
    raw = read_slice(ds.raw_samples[0][0], 0)
    torch.testing.assert_close(d0["target"] * d0["scale"], raw.target)
    torch.testing.assert_close(d0["kspace"] * d0["scale"], raw.kspace)


def test_load_volume_and_coil_maps_from_mask(synthetic_file: Path) -> None:
    d = T.LoadFastMRId(keys="path", slice_key=None)({"path": synthetic_file})
    assert d["kspace"].ndim == 4 and "slice_num" not in d
    masked, mask, num_low = T.ApplyMask(create_mask_for_mask_type("equispaced_fraction", [0.25], [2]))(d["kspace"])
    band = num_low_frequencies_from_mask(mask)  # the centre band, possibly widened by adjacent sampled lines
    assert band >= num_low
    from_mask = T.EstimateCoilMaps()(masked, mask=mask)
    assert from_mask.shape == masked.shape
    assert torch.equal(from_mask, T.EstimateCoilMaps(num_low_frequencies=band)(masked))
    # a value in the call wins over the constructor's, which wins over the mask
    assert torch.equal(
        T.EstimateCoilMaps(num_low_frequencies=band)(masked, num_low, mask), T.EstimateCoilMaps()(masked, num_low)
    )
    scaled, scale = T.KspaceNormalize(mode="mean")(masked)
    assert rss(ifft2c(scaled)).mean().item() == pytest.approx(1.0, rel=1e-5) and scale > 0
