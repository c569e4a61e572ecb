"""Write the DIRECT / ATOMMIC reference fixtures of ``tests/recon/test_interop.py`` into ``tests/data/interop/``.

Run with the side environments' interpreters (they are NOT dependencies of this project; see
``/work/shared/reference/install.md``)::

    /tmp/venv-direct/bin/python tests/interop/make_fixtures.py --library direct
    /tmp/venv-atommic/bin/python tests/interop/make_fixtures.py --library atommic

Each case builds the reference implementation with random weights at a small size (batch 1, 2 coils, 24 x 20),
runs it on a fixed synthetic input (float64 for ATOMMIC; float32 for DIRECT, whose FFT wrappers accept
complex64 only) and writes two files:

- ``<case>.safetensors``: the reference model's own ``state_dict`` (its parameter names and layouts), with the
  constructor settings as JSON in the metadata key ``"config"``;
- ``<case>.npz``: the inputs in the reference layout (``masked_kspace`` / ``sens_maps`` ``(N, coil, H, W, 2)``,
  ``mask`` ``(N, 1, H, W, 1)``, optional ``initial_prediction`` ``(N, H, W, 2)``) and the outputs (``output``:
  the final estimate; ``outputs``: every estimate the reference returns, stacked; see each case's ``kind``).

Files are written to a temporary name and renamed into place. No pickle anywhere.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "data" / "interop"
BATCH, COILS, HEIGHT, WIDTH = 1, 2, 24, 20


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def make_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    """A smooth complex phantom, 2 normalised smooth coil maps, a column mask; float64, real-pair layouts."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(
        torch.linspace(-1, 1, HEIGHT, dtype=torch.float64),
        torch.linspace(-1, 1, WIDTH, dtype=torch.float64),
        indexing="ij",
    )
    image = ((x / 0.8) ** 2 + (y / 0.9) ** 2 < 1).double() + 0.5 * ((x - 0.2) ** 2 + (y + 0.1) ** 2 < 0.1).double()
    image = image * torch.exp(1j * (0.7 * x + 0.3 * y)) + 0.05 * torch.randn(
        HEIGHT, WIDTH, generator=g, dtype=torch.float64
    )
    maps = []
    for c in range(COILS):
        a = 2 * math.pi * c / COILS
        amp = torch.exp(-((x - 0.8 * math.cos(a)) ** 2 + (y - 0.8 * math.sin(a)) ** 2))
        maps.append(amp * torch.exp(1j * (a + 0.4 * y)))
    sens = torch.stack(maps)
    sens = sens / sens.abs().pow(2).sum(0, keepdim=True).sqrt()
    mask = (torch.rand(WIDTH, generator=g) < 0.35).double()
    mask[WIDTH // 2 - 2 : WIDTH // 2 + 2] = 1
    kspace = torch.fft.fftshift(
        torch.fft.fft2(torch.fft.ifftshift(image * sens, dim=(-2, -1)), norm="ortho"), dim=(-2, -1)
    )
    kspace = kspace * mask
    return {
        "masked_kspace": torch.view_as_real(kspace)[None].contiguous(),  # (1, C, H, W, 2)
        "sens_maps": torch.view_as_real(sens)[None].contiguous(),  # (1, C, H, W, 2)
        "mask": mask.view(1, 1, 1, WIDTH, 1).expand(1, 1, HEIGHT, WIDTH, 1).contiguous(),  # (1, 1, H, W, 1)
    }


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Replace every parameter by random values (small enough that the recurrences stay well conditioned).

    Scalar step sizes / DC weights get values away from their initial 1 so that a wrong mapping shows.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() == 1:
                p.copy_(0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype))
            else:
                fan_in = max(1, p[0].numel()) if p.ndim > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (1.0 / math.sqrt(fan_in)))


def save_case(name: str, model: torch.nn.Module, config: dict, arrays: dict[str, torch.Tensor]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for suffix, write in (
        (".safetensors", lambda p: save_file(state, p, metadata={"config": json.dumps(config)})),
        (".npz", lambda p: np.savez_compressed(p, **{k: v.detach().numpy() for k, v in arrays.items()})),
    ):
        fd, tmp = tempfile.mkstemp(dir=OUT, suffix=suffix)
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, OUT / f"{name}{suffix}")
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    print(f"wrote {name}: {len(state)} tensors, {sum(v.numel() for v in state.values())} parameters")


# ---------------------------------------------------------------------------------------------------------------
# DIRECT


def direct_cases() -> dict[str, Callable[[], None]]:
    from direct.data.transforms import fft2, ifft2
    from direct.nn.cirim.cirim import CIRIM
    from direct.nn.recurrentvarnet.recurrentvarnet import RecurrentVarNet
    from direct.nn.rim.rim import RIM

    fwd = partial(fft2, centered=True, normalized=True)
    bwd = partial(ifft2, centered=True, normalized=True)

    def rvn(name: str, config: dict, seed: int) -> Callable[[], None]:
        def run() -> None:
            torch.manual_seed(seed)
            model = RecurrentVarNet(fwd, bwd, **config).float().eval()
            randomize(model, seed)
            x = {k: v.float() for k, v in make_inputs().items()}
            with torch.no_grad():
                kspace = model(x["masked_kspace"], x["mask"], x["sens_maps"])
            save_case(name, model, {"kind": "kspace", **config}, {**x, "output": kspace})

        return run

    def rim(name: str, config: dict, seed: int) -> Callable[[], None]:
        def run() -> None:
            torch.manual_seed(seed)
            model = RIM(fwd, bwd, **config).float().train()  # train(): every time step is returned
            randomize(model, seed)
            x = {k: v.float() for k, v in make_inputs().items()}
            with torch.no_grad():
                etas, _ = model(None, x["masked_kspace"], x["mask"], x["sens_maps"])
            outputs = torch.stack([e.permute(0, 2, 3, 1) for e in etas])  # (T, N, H, W, 2)
            save_case(name, model, {"kind": "image", **config}, {**x, "outputs": outputs, "output": outputs[-1]})

        return run

    def cirim(name: str, config: dict, seed: int) -> Callable[[], None]:
        def run() -> None:
            torch.manual_seed(seed)
            model = CIRIM(fwd, bwd, **config).float().eval()
            randomize(model, seed)
            x = {k: v.float() for k, v in make_inputs().items()}
            with torch.no_grad():
                cascades = next(model(x["masked_kspace"], x["mask"], x["sens_maps"]))
            outputs = torch.stack([torch.stack(c) for c in cascades])  # (cascades, T, N, H, W) magnitudes
            save_case(
                name, model, {"kind": "magnitude", **config}, {**x, "outputs": outputs, "output": outputs[-1, -1]}
            )

        return run

    init = {"initializer_channels": (4, 6), "initializer_dilations": (1, 2)}
    return {
        "direct_recurrentvarnet": rvn(
            "direct_recurrentvarnet",
            {
                "num_steps": 3,
                "recurrent_hidden_channels": 6,
                "recurrent_num_layers": 3,
                "learned_initializer": True,
                "initializer_initialization": "sense",
                "initializer_multiscale": 2,
                **init,
            },
            1,
        ),
        "direct_recurrentvarnet_normalized": rvn(
            "direct_recurrentvarnet_normalized",
            {
                "num_steps": 2,
                "recurrent_hidden_channels": 5,
                "recurrent_num_layers": 2,
                "no_parameter_sharing": False,
                "learned_initializer": True,
                "initializer_initialization": "zero_filled",
                "normalized": True,
                **init,
            },
            2,
        ),
        "direct_rim": rim(
            "direct_rim",
            {
                "hidden_channels": 6,
                "length": 3,
                "depth": 2,
                "no_parameter_sharing": True,
                "image_initialization": "sense",
                "learned_initializer": True,
                "initializer_multiscale": 2,
                **init,
            },
            3,
        ),
        "direct_rim_normalized": rim(
            "direct_rim_normalized",
            {
                "hidden_channels": 5,
                "length": 2,
                "depth": 3,
                "no_parameter_sharing": False,
                "image_initialization": "zero_filled",
                "normalized": True,
            },
            4,
        ),
        "direct_cirim": cirim(
            "direct_cirim",
            {"depth": 2, "time_steps": 3, "recurrent_hidden_channels": 6, "num_cascades": 2},
            5,
        ),
        "direct_cirim_shared": cirim(
            "direct_cirim_shared",
            {
                "depth": 2,
                "time_steps": 2,
                "recurrent_hidden_channels": 5,
                "num_cascades": 3,
                "no_parameter_sharing": False,
            },
            6,
        ),
    }


# ---------------------------------------------------------------------------------------------------------------
# ATOMMIC


def _atommic_cirim_cfg(cell: str, filters: int, cascades: int, time_steps: int, **extra) -> dict:
    return {
        "recurrent_layer": cell,
        "conv_filters": [filters, filters, 2],
        "conv_kernels": [5, 3, 3],
        "conv_dilations": [1, 2, 1],
        "conv_bias": [True, True, False],
        "recurrent_filters": [filters, filters, 0],
        "recurrent_kernels": [1, 1, 0],
        "recurrent_dilations": [1, 1, 0],
        "recurrent_bias": [True, True, False],
        "depth": 2,
        "time_steps": time_steps,
        "conv_dim": 2,
        "num_cascades": cascades,
        "no_dc": True,
        "keep_prediction": True,
        "accumulate_predictions": True,
        "dimensionality": 2,
        "reconstruction_loss": {"l1": 1.0},
        **extra,
    }


def _to_atommic_kspace(x: dict[str, torch.Tensor], centered: bool, normalization: str) -> dict[str, torch.Tensor]:
    """Re-express the centred-ortho k-space (and mask) in the FFT convention the ATOMMIC model is configured with."""
    dims = (-2, -1)
    k = torch.view_as_complex(x["masked_kspace"])
    coil_images = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=dims), norm="ortho"), dim=dims)
    mask = x["mask"]  # (N, 1, H, W, 1)
    if centered:
        k = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(coil_images, dim=dims), norm=normalization), dim=dims)
    else:
        k = torch.fft.fft2(coil_images, norm=normalization)
        mask = torch.fft.ifftshift(mask, dim=(2, 3))
    k = k * mask[..., 0]
    return {**x, "masked_kspace": torch.view_as_real(k).contiguous(), "mask": mask.contiguous()}


def atommic_cases() -> dict[str, Callable[[], None]]:
    from atommic.collections.reconstruction.nn.cirim import CIRIM
    from atommic.collections.reconstruction.nn.recurrentvarnet import RecurrentVarNet
    from omegaconf import OmegaConf

    def _sense(x: dict[str, torch.Tensor], centered: bool, normalization: str) -> torch.Tensor:
        k = torch.view_as_complex(x["masked_kspace"])
        if centered:
            img = torch.fft.fftshift(
                torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm=normalization), dim=(-2, -1)
            )
        else:
            img = torch.fft.ifft2(k, norm=normalization)
        s = torch.view_as_complex(x["sens_maps"])
        return torch.view_as_real((img * s.conj()).sum(1)).contiguous()

    def cirim(name: str, config: dict, seed: int) -> Callable[[], None]:
        def run() -> None:
            torch.manual_seed(seed)
            model = CIRIM(OmegaConf.create(config), trainer=None).double().eval()
            randomize(model, seed)
            x = _to_atommic_kspace(make_inputs(), config["fft_centered"], config["fft_normalization"])
            with torch.no_grad():
                cascades = model.forward(
                    y=x["masked_kspace"],
                    sensitivity_maps=x["sens_maps"],
                    mask=x["mask"],
                    initial_prediction=torch.empty(0),
                    sigma=1.0,
                )
            outputs = torch.stack([torch.stack([torch.view_as_real(p) for p in c]) for c in cascades])
            save_case(name, model, {"kind": "image", **config}, {**x, "outputs": outputs, "output": outputs[-1, -1]})

        return run

    def rvn(name: str, config: dict, seed: int) -> Callable[[], None]:
        def run() -> None:
            torch.manual_seed(seed)
            model = RecurrentVarNet(OmegaConf.create(config), trainer=None).double().eval()
            randomize(model, seed)
            x = _to_atommic_kspace(make_inputs(), config["fft_centered"], config["fft_normalization"])
            initial = _sense(x, config["fft_centered"], config["fft_normalization"])
            with torch.no_grad():
                image = model.forward(
                    y=x["masked_kspace"],
                    sensitivity_maps=x["sens_maps"],
                    mask=x["mask"],
                    initial_prediction=initial,
                    sigma=1.0,
                )
            image = torch.view_as_real(image) if torch.is_complex(image) else image
            arrays = {**x, "initial_prediction": initial, "output": image}
            save_case(name, model, {"kind": "image", **config}, arrays)

        return run

    centred = {"fft_centered": True, "fft_normalization": "ortho", "spatial_dims": [-2, -1], "coil_dim": 1}
    uncentred = {"fft_centered": False, "fft_normalization": "backward", "spatial_dims": [-2, -1], "coil_dim": 1}
    rvn_base = {
        "in_channels": 2,
        "recurrent_hidden_channels": 6,
        "recurrent_num_layers": 3,
        "num_steps": 3,
        "no_parameter_sharing": True,
        "learned_initializer": True,
        "initializer_initialization": "sense",
        "initializer_channels": [4, 6],
        "initializer_dilations": [1, 2],
        "initializer_multiscale": 2,
        "reconstruction_loss": {"l1": 1.0},
        "dimensionality": 2,
    }
    return {
        "atommic_cirim": cirim(
            "atommic_cirim",
            _atommic_cirim_cfg("IndRNN", 6, 2, 3, coil_combination_method="SENSE", **centred),
            11,
        ),
        "atommic_cirim_mgu_uncentred": cirim(
            "atommic_cirim_mgu_uncentred",
            _atommic_cirim_cfg("MGU", 5, 2, 3, coil_combination_method="RSS", **uncentred),
            12,
        ),
        "atommic_rim": cirim(
            "atommic_rim",
            _atommic_cirim_cfg("GRU", 6, 1, 2, coil_combination_method="SENSE", **centred),
            13,
        ),
        "atommic_recurrentvarnet": rvn(
            "atommic_recurrentvarnet", {**rvn_base, "coil_combination_method": "SENSE", **centred}, 14
        ),
        "atommic_recurrentvarnet_uncentred": rvn(
            "atommic_recurrentvarnet_uncentred",
            {
                **rvn_base,
                "recurrent_num_layers": 2,
                "no_parameter_sharing": False,
                "initializer_multiscale": 1,
                "initializer_initialization": "zero_filled",
                "coil_combination_method": "RSS",
                **uncentred,
            },
            15,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", choices=["direct", "atommic"], required=True)
    parser.add_argument("--cases", nargs="*", default=None, help="only these cases")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = direct_cases() if args.library == "direct" else atommic_cases()
    for name, run in cases.items():
        if args.cases and name not in args.cases:
            continue
        run()


if __name__ == "__main__":
    main()
