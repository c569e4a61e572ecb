from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import TINY, tiny_dataset

from recon.training import TrainConfig, build_scheduler, load_model, train


def _config(**kw) -> TrainConfig:
    base = {"model": "rim", "model_config": TINY["rim"], "max_steps": 4, "lr": 3e-3, "seed": 0, "device": "cpu"}
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("name", ["rim", "cirim"])
def test_loss_goes_down(name):
    data = tiny_dataset(n=1)
    result = train(_config(model=name, model_config=TINY[name], max_steps=25, lr=5e-3, schedule="constant"), data)
    assert len(result.losses) == 25 and result.step == 25
    assert result.losses[-1] < 0.8 * result.losses[0]


def test_same_seed_same_weights():
    data = tiny_dataset(n=4)
    a = train(_config(batch_size=2), data).model.state_dict()
    b = train(_config(batch_size=2), data).model.state_dict()
    c = train(_config(batch_size=2, seed=1), data).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_round_trip_and_resume(tmp_path):
    data = tiny_dataset(n=3)
    full = train(_config(max_steps=6, warmup_steps=2, schedule="constant"), data)
    ckpt = tmp_path / "ckpt"
    first = train(_config(max_steps=3, warmup_steps=2, schedule="constant", checkpoint_dir=str(ckpt)), data)
    # round trip: the model rebuilt from config.json + safetensors equals the trained one
    model, meta = load_model(ckpt / "last")
    assert meta["model"] == "rim" and meta["step"] == 3 and meta["model_config"] == TINY["rim"]
    assert json.loads((ckpt / "step-00000003" / "config.json").read_text())["step"] == 3
    sd = first.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    assert not list(ckpt.glob(".*"))  # no temporary files left
    # resume (to 6 steps) continues exactly as the uninterrupted run (the cosine schedule would depend on max_steps)
    resumed = train(
        _config(max_steps=6, warmup_steps=2, schedule="constant", checkpoint_dir=str(ckpt), resume="last"), data
    )
    assert resumed.step == 6 and len(resumed.losses) == 3
    assert resumed.losses == full.losses[3:]
    ref = full.model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in resumed.model.state_dict().items())


def test_schedule_warmup_then_cosine():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, TrainConfig(max_steps=10, warmup_steps=2, schedule="constant", min_lr_ratio=0.1))
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert lrs[-1] > 0.1


def test_grad_clip_and_bad_items():
    with pytest.raises(KeyError):
        train(_config(max_steps=1), [{"masked_kspace": torch.zeros(1)}])
    with pytest.raises(ValueError):
        train(_config(max_steps=1, batch_size=4), tiny_dataset(n=2))


class _EpochAware(torch.utils.data.Dataset):
    """Items that depend on the epoch the loop announces (as SliceMaskDataset's per-epoch masks do)."""

    def __init__(self, items):
        self.items, self.epoch = items, 0

    def __len__(self):
        return len(self.items)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        item = dict(self.items[i])
        item["target"] = item["target"] * (1.0 + 0.1 * self.epoch)
        return item


def test_dataloader_workers_give_the_same_weights():
    """Workers read items in other processes; the batches (and the epochs the items see) must not change."""
    data = _EpochAware(tiny_dataset(n=3))
    ref = train(_config(max_steps=7, batch_size=2, num_workers=0), data)
    par = train(_config(max_steps=7, batch_size=2, num_workers=2, prefetch_factor=1), data)
    assert par.losses == ref.losses
    sd = ref.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in par.model.state_dict().items())


def test_bf16_autocast_trains_on_cpu():
    data = tiny_dataset(n=1)
    config = _config(model="cirim", model_config=TINY["cirim"], max_steps=25, lr=5e-3, schedule="constant")
    fp32 = train(config, data)
    bf16 = train(dataclasses.replace(config, precision="bf16"), data)
    assert all(torch.isfinite(torch.tensor(bf16.losses)))
    assert bf16.losses[-1] < 0.8 * bf16.losses[0]
    # the first step (same initial weights) agrees with fp32 to bf16 precision
    assert bf16.losses[0] == pytest.approx(fp32.losses[0], rel=2e-2)
    assert bf16.losses[0] != fp32.losses[0]  # autocast did run in bf16
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # fp32 master weights


def test_channels_last_same_function_as_contiguous():
    data = tiny_dataset(n=2)
    a = train(_config(max_steps=3, channels_last=False), data)
    b = train(_config(max_steps=3, channels_last=True), data)
    assert a.losses == pytest.approx(b.losses, rel=1e-4)
    conv = next(m for m in b.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("field", "value"), [("precision", "fp16"), ("num_workers", -1), ("prefetch_factor", 0)])
def test_bad_speed_settings(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_noise_floor_items_reach_the_loss():
    """Items with ``noise_floor`` are scored as sqrt(|x|^2 + b^2): a larger floor changes the first loss."""
    data = tiny_dataset(n=1)
    plain = train(_config(max_steps=1), data).losses[0]
    zero = train(_config(max_steps=1), [{**it, "noise_floor": 0.0} for it in data]).losses[0]
    floored = train(_config(max_steps=1), [{**it, "noise_floor": 0.3} for it in data]).losses[0]
    assert zero == pytest.approx(plain, rel=1e-5) and floored != pytest.approx(plain, rel=1e-3)


def test_slice_dataset_noise_floor_and_reconstruct(tmp_path):
    from recon.config import DataConfig
    from recon.data.synthetic import write_synthetic_dataset
    from recon.models import create_model
    from recon.training.data import SliceMaskDataset, reconstruct

    write_synthetic_dataset(tmp_path, 1, 1, shape=(32, 32), num_coils=4, noise_std=0.02)
    on, off = DataConfig(noise_floor=True), DataConfig()
    item_on, item_off = SliceMaskDataset(tmp_path, on)[0], SliceMaskDataset(tmp_path, off)[0]
    assert "noise_floor" not in item_off and item_on["noise_floor"] > 0
    # the floor is in the units of the scaled target: about the RSS of the noise in its air
    assert item_on["noise_floor"] == pytest.approx(float(item_on["target"][:3, :3].square().mean().sqrt()), rel=0.3)
    torch.manual_seed(0)
    model = create_model("rim", **TINY["rim"]).eval()
    k, m = item_on["masked_kspace"] * item_on["scale"], item_on["mask"]
    a, b = reconstruct(model, k, m, off), reconstruct(model, k, m, on)
    assert torch.all(b >= a - 1e-6) and not torch.allclose(a, b)


def _dilated_24_weight_grad_error() -> float:
    """Relative error of the bf16 channels-last weight gradient of a 24-channel 3x3 conv with dilation 2."""
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(24, 24, 3, dilation=2)
    x = torch.randn(1, 24, 36, 36, generator=g)
    up = torch.randn(1, 24, 32, 32, generator=g)
    ref = torch.autograd.grad((conv(x) * up).sum(), conv.weight)[0]
    conv = conv.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", torch.bfloat16):
        out = conv(x.contiguous(memory_format=torch.channels_last))
    got = torch.autograd.grad((out.float() * up).sum(), conv.weight)[0]
    return float((got - ref).norm() / ref.norm()) if torch.isfinite(got).all() else float("inf")


def test_bf16_channels_last_probe_agrees_with_a_direct_measurement():
    from recon.models._bf16 import faulty_bf16_channels_last_convs

    net = torch.nn.Sequential(torch.nn.Conv2d(24, 24, 3, dilation=2), torch.nn.Conv2d(16, 16, 3))
    faulty = faulty_bf16_channels_last_convs(net)
    # the 16-channel plain conv is computed right by every backend seen; the dilated one depends on the build
    assert "1" not in faulty
    assert ("0" in faulty) == (_dilated_24_weight_grad_error() > 0.05)
    assert faulty_bf16_channels_last_convs(net, backward=False) == []  # forwards (inference) are right


def test_bf16_training_keeps_nchw_where_channels_last_is_faulty(monkeypatch):
    """A bf16 RecurrentVarNet of 24 channels trained to NaN in channels-last (wrong dilated-conv weight gradients
    on some CPU backends); where the probe finds such convs the run stays NCHW, with a warning, and trains."""
    import recon.models._bf16 as probe

    monkeypatch.setattr(probe, "_verdicts", lambda keys, device, backward: [k[5] != [1, 1] for k in keys])
    rvn = {"num_steps": 2, "hidden_channels": 24, "num_layers": 2, "initializer_channels": (8, 24),
           "initializer_dilations": (1, 2)}  # fmt: skip
    config = _config(model="recurrentvarnet", model_config=rvn, max_steps=6, precision="bf16", channels_last=True)
    with pytest.warns(RuntimeWarning, match=r"channels_last off for this bf16 run: .* conv\(s\)"):
        result = train(config, tiny_dataset(n=2))
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert all(m.weight.is_contiguous() for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    monkeypatch.setattr(probe, "_verdicts", lambda keys, device, backward: [False] * len(keys))
    result = train(dataclasses.replace(config, max_steps=1), tiny_dataset(n=2))  # nothing faulty: channels-last
    conv = next(m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
