"""Load ATOMMIC (wdika/atommic 1.0.1) CIRIM / RIM / RecurrentVarNet checkpoints into our models.

ATOMMIC's models are Lightning modules; their ``state_dict`` (the ``"state_dict"`` entry of a ``.ckpt``, or
``model_weights.ckpt`` inside an ``.atommic`` archive) holds the network directly. ``config`` takes ATOMMIC's
model config (the ``model:`` section of its YAML, e.g. ``model_config.yaml`` of an ``.atommic`` file, which
:func:`load_atommic_checkpoint` reads itself); ``**overrides`` replace single entries. Keys that matter only to
training (losses, metrics, data) are ignored; settings we cannot reproduce raise.

FFT and data conventions: ATOMMIC's ``fft_centered`` / ``fft_normalization`` (defaults when absent: ``False`` /
``"backward"``, as ATOMMIC's ``BaseMRIReconstructionModel``; its fastMRI configs use ``True`` / ``"ortho"``, its
CC359 configs the defaults) become our models' ``fft_centered`` / ``fft_normalization``, so our model consumes
ATOMMIC's k-space and mask as they are (converted from real pairs with :func:`recon.interop.layout.from_real_pair`).
``spatial_dims`` must be the last two, ``coil_dim`` 1, ``dimensionality`` 2, ``consecutive_slices`` 1.
``coil_combination_method``: ``"SENSE"`` -> ``image_init="sense"`` (RIM / CIRIM) and ``output="sense"`` (RVN);
``"RSS"`` -> ``"rss_parts"`` (ATOMMIC's ``rss`` on a real-pair tensor takes the root-sum-of-squares of the real
and imaginary parts separately).

- ``cirim`` / ``rim`` (ATOMMIC's RIM is its CIRIM class with ``num_cascades: 1``): ``reconstruction_module.{c}``
  -> ``cascades.{c}`` (CIRIM) or ``block`` (RIM, one cascade). ``layers.{i}.convs.conv_layer`` ->
  ``convs.{i}.conv``, ``layers.{i}.rnn`` -> ``cells.{i}`` (GRU / MGU ``ih`` / ``hh``, IndRNN ``ih`` and ``hh``: same
  layouts and gate order), ``final_layer.0.conv_layer`` -> ``out.conv``. The cell type follows from the
  ``ih`` output channels (3H GRU, 2H MGU, H IndRNN). ``time_steps`` is rounded up to a multiple of 8 as ATOMMIC
  does. The recurrent states pass from cascade to cascade and (for 2-D data) each cascade continues from the
  previous cascade's last estimate whatever ``keep_prediction`` says (ATOMMIC only falls back to the
  coil-combined image when no previous estimate exists). ``sigma`` (a forward argument in ATOMMIC, default 1)
  is clamped to ``>= 1`` as ATOMMIC's ``log_likelihood_gradient`` does. The layer layout must be ATOMMIC's
  standard one (convs ``[f, f, 2]``, kernels ``[5, 3, 3]``, dilations ``[1, 2, 1]``, biases ``[T, T, F]``, cells
  ``[f, f, 0]`` with kernel 1). ``no_dc: false`` is refused: ATOMMIC then returns k-space ``y - F(S eta_t)``
  and its CIRIM fails for more than one cascade.
- ``recurrentvarnet``: as DIRECT's (see :mod:`recon.interop.direct`), with ``num_steps`` rounded up to a
  multiple of 8. ``initializer_initialization="sense"`` feeds the initialiser ``F(initial_prediction)``; ours uses
  the SENSE image of the input, which equals ATOMMIC when the caller's ``initial_prediction`` is that image
  (what ATOMMIC's data pipeline provides for SENSE coil combination); with ``coil_combination_method: RSS`` that
  image is RSS-combined, so that pairing is refused.
- A coil-sensitivity network (``estimate_coil_sensitivity_maps_with_nn``: ``coil_sensitivity_maps_nn.*`` keys)
  is refused unless ``drop_sensitivity_model=True``; then our model needs the maps it would have produced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from recon.interop._convert import (
    ConversionError,
    Keys,
    convert_gru_stack,
    convert_recurrent_init,
    count_indices,
)
from recon.interop._io import StateSource, read_state_dict

__all__ = ["convert_atommic_state_dict", "load_atommic_checkpoint"]

_TRAINING_PREFIXES = ("total_reconstruction_loss.", "reconstruction_losses.", "MSE.", "NMSE.", "SSIM.", "PSNR.")
_SENS_PREFIX = "coil_sensitivity_maps_nn."
_STANDARD_LAYOUT = {
    "conv_kernels": [5, 3, 3],
    "conv_dilations": [1, 2, 1],
    "conv_bias": [True, True, False],
    "recurrent_kernels": [1, 1, 0],
    "recurrent_dilations": [1, 1, 0],
    "recurrent_bias": [True, True, False],
}
_COMBINATION = {"SENSE": "sense", "RSS": "rss_parts"}


def _round8(steps: int) -> int:
    return 8 * math.ceil(int(steps) / 8)


def _common(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """FFT and coil-combination settings, after checking the data layout settings."""
    spatial = config.get("spatial_dims")
    if spatial is not None and [int(d) for d in spatial] not in ([-2, -1], [2, 3]):
        raise ConversionError(f"{source}: spatial_dims={list(spatial)} is not supported (the last two only)")
    for name, supported in (("coil_dim", 1), ("dimensionality", 2), ("consecutive_slices", 1), ("conv_dim", 2)):
        if config.get(name, supported) != supported:
            raise ConversionError(f"{source}: {name}={config[name]!r} is not supported (only {supported})")
    method = config.get("coil_combination_method", "SENSE")
    if method not in _COMBINATION:
        raise ConversionError(
            f"{source}: coil_combination_method={method!r} is not supported; use {list(_COMBINATION)}"
        )
    normalization = config.get("fft_normalization", "backward")
    return {
        "fft_centered": bool(config.get("fft_centered", False)),
        "fft_normalization": "backward" if normalization in (None, "none") else normalization,
        "combination": _COMBINATION[method],
    }


def _cirim(keys: Keys, config: Mapping[str, Any], model: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    source = keys.source
    num_cascades = count_indices(keys, "reconstruction_module.")
    if num_cascades == 0:
        raise ConversionError(f"{source}: no 'reconstruction_module.*' keys: this is not an ATOMMIC CIRIM state dict")
    if config.get("num_cascades") not in (None, num_cascades):
        raise ConversionError(f"{source}: num_cascades={config['num_cascades']} but the checkpoint has {num_cascades}")
    if model == "rim" and num_cascades != 1:
        raise ConversionError(
            f"{source}: a RIM has one cascade; this checkpoint has {num_cascades} (load it as 'cirim')"
        )
    if config.get("no_dc") is False or keys.has("reconstruction_module.0.dc_weight"):
        raise ConversionError(
            f"{source}: no_dc=false (explicit k-space DC) is not supported; see recon.interop.atommic"
        )
    for name, standard in _STANDARD_LAYOUT.items():
        if config.get(name) is not None and list(config[name]) != standard:
            raise ConversionError(f"{source}: {name}={list(config[name])} is not supported (only {standard})")
    if config.get("depth", 2) != 2:
        raise ConversionError(f"{source}: depth={config['depth']} is not supported (only 2)")
    if config.get("time_steps") is None:
        raise ConversionError(f"{source}: time_steps is not stored in the weights; pass time_steps=... (e.g. 8)")
    common = _common(config, source)
    hidden = keys.state["reconstruction_module.0.layers.0.convs.conv_layer.weight"].shape[0]
    gates = keys.state["reconstruction_module.0.layers.0.rnn.ih.weight"].shape[0] // hidden
    cell = {3: "gru", 2: "mgu", 1: "indrnn"}.get(gates)
    if cell is None or gates * hidden != keys.state["reconstruction_module.0.layers.0.rnn.ih.weight"].shape[0]:
        raise ConversionError(f"{source}: cannot tell the cell type from rnn.ih.weight with {gates} x {hidden} rows")
    given = config.get("recurrent_layer")
    if given is not None and given.lower() != cell:
        raise ConversionError(f"{source}: recurrent_layer={given!r} but the weights are those of a {cell} cell")
    state: dict[str, torch.Tensor] = {}
    for c in range(num_cascades):
        theirs = f"reconstruction_module.{c}."
        ours = "block." if model == "rim" else f"cascades.{c}."
        for i in range(2):
            weight = keys.take(f"{theirs}layers.{i}.convs.conv_layer.weight")
            if weight.shape[0] != hidden or weight.shape[-1] != (5 if i == 0 else 3):
                raise ConversionError(f"{source}: {theirs}layers.{i} conv has shape {tuple(weight.shape)}")
            state[f"{ours}convs.{i}.conv.weight"] = weight
            state[f"{ours}convs.{i}.conv.bias"] = keys.take(f"{theirs}layers.{i}.convs.conv_layer.bias")
            state[f"{ours}cells.{i}.ih.weight"] = keys.take(f"{theirs}layers.{i}.rnn.ih.weight")
            state[f"{ours}cells.{i}.ih.bias"] = keys.take(f"{theirs}layers.{i}.rnn.ih.bias")
            hh = f"{theirs}layers.{i}.rnn.hh" + ("" if cell == "indrnn" else ".weight")
            state[f"{ours}cells.{i}.hh" + ("" if cell == "indrnn" else ".weight")] = keys.take(hh)
        state[f"{ours}out.conv.weight"] = keys.take(f"{theirs}final_layer.0.conv_layer.weight")
    ours_config: dict[str, Any] = {
        "num_steps": _round8(config["time_steps"]),
        "hidden_channels": hidden,
        "cell": cell,
        "sigma": max(float(config.get("sigma", 1.0)), 1.0),
        "image_init": common["combination"],
        "fft_centered": common["fft_centered"],
        "fft_normalization": common["fft_normalization"],
    }
    if model == "cirim":
        ours_config.update(num_cascades=num_cascades, keep_prediction=True, carry_hidden=True)
    return state, ours_config


def _recurrentvarnet(keys: Keys, config: Mapping[str, Any], model: str) -> tuple[dict[str, torch.Tensor], dict]:
    source = keys.source
    num_blocks = count_indices(keys, "block_list.")
    if num_blocks == 0:
        raise ConversionError(f"{source}: no 'block_list.*' keys: this is not an ATOMMIC RecurrentVarNet state dict")
    common = _common(config, source)
    first = keys.state["block_list.0.regularizer.conv_blocks.0.1.weight"]
    hidden, in_channels = first.shape[0], first.shape[1]
    if in_channels != 2 or config.get("in_channels", 2) != 2:
        raise ConversionError(f"{source}: in_channels={in_channels}; only complex (2-channel) images are supported")
    num_layers = count_indices(keys, "block_list.0.regularizer.update_gates.")
    if num_layers < 2:
        raise ConversionError(f"{source}: recurrent_num_layers={num_layers}; at least 2 are supported")
    for name, value in (("recurrent_hidden_channels", hidden), ("recurrent_num_layers", num_layers)):
        if config.get(name) not in (None, value):
            raise ConversionError(f"{source}: {name}={config[name]} but the checkpoint has {value}")
    if num_blocks > 1:
        num_steps = num_blocks
        if config.get("num_steps") is not None and _round8(config["num_steps"]) != num_blocks:
            raise ConversionError(
                f"{source}: num_steps={config['num_steps']} but the checkpoint has {num_blocks} blocks"
            )
    elif config.get("num_steps") is None:
        raise ConversionError(
            f"{source}: one block (shared weights): pass num_steps=... (rounded up to a multiple of 8)"
        )
    else:
        num_steps = _round8(config["num_steps"])
    state: dict[str, torch.Tensor] = {}
    for t in range(num_blocks):
        state[f"blocks.{t}.learning_rate"] = keys.take(f"block_list.{t}.learning_rate").reshape(())
        state.update(convert_gru_stack(keys, f"block_list.{t}.regularizer.", f"blocks.{t}.regularizer.", num_layers))
    ours: dict[str, Any] = {
        "num_steps": num_steps,
        "hidden_channels": hidden,
        "num_layers": num_layers,
        "no_parameter_sharing": num_blocks > 1,
        "gru_state_relu": True,
        "learned_initializer": False,
        "output": common["combination"],
        "fft_centered": common["fft_centered"],
        "fft_normalization": common["fft_normalization"],
    }
    if any(k.startswith("initializer.") for k in keys.state):
        tensors, channels, multiscale = convert_recurrent_init(keys, "initializer.", "initializer.", num_layers)
        state.update(tensors)
        dilations = config.get("initializer_dilations")
        if dilations is None:
            raise ConversionError(f"{source}: initializer_dilations is not stored in the weights; pass it")
        init = config.get("initializer_initialization", "sense")
        mapping = {"sense": "sense_kspace", "zero_filled": "coil_sum_kspace"}
        if init not in mapping:
            raise ConversionError(
                f"{source}: initializer_initialization={init!r} is not supported; use {list(mapping)}"
            )
        if init == "sense" and common["combination"] != "sense":
            raise ConversionError(
                f"{source}: initializer_initialization='sense' with coil_combination_method="
                f"{config.get('coil_combination_method')!r} is not supported: ATOMMIC then feeds its initialiser the "
                "caller's initial_prediction, which its data pipeline makes by RSS coil combination, while ours "
                "feeds it the SENSE image of the input, so the outputs would differ; only SENSE coil combination "
                "(or initializer_initialization='zero_filled') is reproduced"
            )
        ours.update(
            learned_initializer=True,
            initializer_channels=channels,
            initializer_dilations=tuple(dilations),
            initializer_multiscale=multiscale,
            initializer_input=mapping[init],
        )
    return state, ours


_CONVERTERS = {"cirim": _cirim, "rim": _cirim, "recurrentvarnet": _recurrentvarnet}


def convert_atommic_state_dict(
    state_dict: dict[str, torch.Tensor],
    model: str = "cirim",
    config: Mapping[str, Any] | None = None,
    drop_sensitivity_model: bool = False,
    **overrides: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Convert an ATOMMIC state dict to ours.

    Args:
        state_dict: the Lightning module's ``state_dict``.
        model: ``"cirim"``, ``"rim"`` or ``"recurrentvarnet"``.
        config: ATOMMIC's model config (its ``model:`` section); may be None when ``overrides`` say enough.
        drop_sensitivity_model: discard ``coil_sensitivity_maps_nn.*`` weights instead of refusing them.
        **overrides: single config entries (ATOMMIC names), e.g. ``time_steps=8``, ``sigma=1.0``.

    Returns:
        ``(state_dict, config)`` for :func:`recon.models.create_model` ``(model, **config)``.

    Raises:
        ConversionError: (a ValueError) naming the missing / unknown keys or the unsupported setting.
    """
    if model not in _CONVERTERS:
        raise ValueError(f"unknown model {model!r}; ATOMMIC checkpoints of {sorted(_CONVERTERS)} can be loaded")
    merged = {**dict(config or {}), **overrides}
    keys = Keys(state_dict, f"ATOMMIC {model}")
    sens_keys = [k for k in keys.state if k.startswith(_SENS_PREFIX)]
    if sens_keys and not drop_sensitivity_model:
        raise ConversionError(
            f"ATOMMIC {model}: the checkpoint holds a coil-sensitivity network ({len(sens_keys)} "
            f"'{_SENS_PREFIX}*' keys); our models take the maps as input. Pass drop_sensitivity_model=True to "
            "ignore it."
        )
    keys.drop(sens_keys)
    keys.drop([k for k in keys.state if k.startswith(_TRAINING_PREFIXES)])
    state, ours = _CONVERTERS[model](keys, merged, model)
    keys.finish()
    return state, ours


def load_atommic_checkpoint(
    source: StateSource,
    model: str = "cirim",
    config: Mapping[str, Any] | None = None,
    drop_sensitivity_model: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Build our model from an ATOMMIC checkpoint.

    Args:
        source: a state dict, or a path to ``.safetensors``, a weights-only ``.ckpt`` / ``.pt`` (its
            ``"state_dict"`` entry), or an ``.atommic`` archive (its ``model_config.yaml`` is used as ``config``
            unless ``config`` is given).
        model: ``"cirim"``, ``"rim"`` or ``"recurrentvarnet"``.
        config: ATOMMIC's model config (see :func:`convert_atommic_state_dict`).
        drop_sensitivity_model: discard a coil-sensitivity network's weights instead of refusing them.
        **overrides: single config entries.

    Returns:
        Our model in eval mode, with the converted weights (dtype as stored).
    """
    from recon.models import build_model

    state, stored = read_state_dict(source)
    if config is None and stored is not None:
        config = stored.get("model", stored) if isinstance(stored, Mapping) else None
    converted, ours = convert_atommic_state_dict(state, model, config, drop_sensitivity_model, **overrides)
    # built empty and cast first, so weights stored in float64 load without rounding to float32
    net = build_model(model, ours)
    net = net.to(next(iter(converted.values())).dtype)
    net.load_state_dict(converted, strict=True)
    return net.eval()
