"""Load DIRECT (NKI-AI/direct, ``direct-recon`` 2.2) RecurrentVarNet / RIM / CIRIM checkpoints into our models.

Conventions (DIRECT ``direct.data.transforms`` with ``centered=True, normalized=True``, its training default):
centred orthonormal FFTs, i.e. exactly :mod:`recon.ops`. DIRECT's tensors are real pairs: k-space and maps
``(N, coil, H, W, 2)``, mask ``(N, 1, H, W, 1)``; :func:`recon.interop.layout.from_real_pair` converts them. Weights
are converted once; the models then run natively on complex tensors.

Per model (``**config`` takes DIRECT's own constructor / config names; values readable from the weights are
inferred and, when also given, cross-checked):

- ``recurrentvarnet`` -> :class:`recon.models.RecurrentVarNet` with ``gru_state_relu=True`` (DIRECT's ``Conv2dGRU``
  rectifies each state before the next layer), ``normalized`` from ``.convgru.`` keys (``NormConv2dGRU``),
  ``initializer_input`` from ``initializer_initialization`` (``"sense"`` -> ``"sense_kspace"``: DIRECT feeds the
  initialiser the k-space of the SENSE image, ``"zero_filled"`` -> ``"coil_sum_kspace"``). ``learning_rate``
  ``(1,)`` -> scalar. DIRECT returns k-space ``k^T``; ours returns ``R F^-1 k^T`` (apply ``sens_reduce`` to
  DIRECT's output to compare). Inferred: hidden channels, layers, steps (unshared), initializer channels and
  multiscale. Needed when not inferable: ``num_steps`` (shared weights), ``initializer_dilations`` (default
  ``(1, 1, 2, 4)`` when 4 initializer convs), ``initializer_initialization`` (default ``"sense"``).
- ``rim`` -> :class:`recon.models.RIM` with ``regularizer="gru_stack"``: ``cell_list.{t}`` -> ``block.stacks.{t}``,
  ``initializer`` (``RIMInit``) -> ``block.initializer``; ``image_initialization`` ``"sense"`` -> ``"sense"``,
  ``"zero_filled"`` (DIRECT's config default) -> ``"coil_sum"``; ``scale_loglikelihood = s`` -> ``sigma = 1/s``.
  Needed: ``length`` when the weights are shared (DIRECT's config default ``no_parameter_sharing=False``).
- ``cirim`` -> :class:`recon.models.CIRIM` with ``cell="indrnn"``, ``output_relu=True`` (DIRECT's final layer
  is a ``ConvNonlinear`` with ReLU) and ``fixed_step_input=True`` (DIRECT's block never updates its input image
  within a cascade: ``eta_t = eta_in + delta_t``, ``delta_t`` from ``[grad(eta_in), eta_in]`` and the states).
  DIRECT's cell input is ``[grad, eta]``, ours ``[eta, grad]``: the first conv's input channels are permuted.
  With ``no_parameter_sharing=True`` (default; the blocks have no ``dc_weight``) every cascade starts from the
  previous estimate with ZERO states (``carry_hidden=False``). With ``False`` (the blocks carry ``dc_weight``)
  DIRECT returns k-space ``y - M (k_in - y) - F E eta_t`` and carries the states: ``explicit_dc=True,
  explicit_dc_form="kspace_residual"`` with every ``lambda = 1`` (DIRECT never uses its ``dc_weight``
  parameters; they are dropped). DIRECT's outputs are magnitudes; ours are complex (compare ``abs``).
  Needed: ``time_steps`` (not stored in the weights).

Unsupported (clear error): ``dense_connect``, ``instance_norm``, ``replication_padding=False``, ``whiten_input``,
RIM ``steps`` other than 1, ``image_initialization="input_image"/"input_kspace"``,
``initializer_initialization="input_image"``, RIM or RecurrentVarNet with one GRU layer, CIRIM ``depth != 2``.
"""

from __future__ import annotations

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

__all__ = ["convert_direct_state_dict", "load_direct_checkpoint"]

_ACCEPTED = {
    "recurrentvarnet": {
        "num_steps", "recurrent_hidden_channels", "recurrent_num_layers", "no_parameter_sharing",
        "learned_initializer", "initializer_initialization", "initializer_channels", "initializer_dilations",
        "initializer_multiscale", "normalized", "in_channels", "model_name",
    },
    "rim": {
        "hidden_channels", "x_channels", "length", "depth", "steps", "no_parameter_sharing", "instance_norm",
        "dense_connect", "skip_connections", "replication_padding", "image_initialization", "learned_initializer",
        "initializer_channels", "initializer_dilations", "initializer_multiscale", "normalized",
        "scale_loglikelihood", "whiten_input", "model_name", "sensitivity_map_model", "z_reduction_frequency",
        "kspace_context",
    },
    "cirim": {
        "time_steps", "depth", "in_channels", "recurrent_hidden_channels", "num_cascades", "no_parameter_sharing",
        "model_name",
    },
}  # fmt: skip


def _agree(config: dict[str, Any], name: str, inferred: Any, source: str) -> Any:
    """``inferred``, after checking that ``config[name]`` (if given) says the same."""
    if name in config and config[name] is not None:
        given = tuple(config[name]) if isinstance(config[name], list) else config[name]
        if given != inferred:
            raise ConversionError(f"{source}: {name}={given!r} was given but the checkpoint has {inferred!r}")
    return inferred


def _need(config: dict[str, Any], name: str, source: str, hint: str) -> Any:
    if config.get(name) is None:
        raise ConversionError(f"{source}: {name} is not stored in the checkpoint's weights; pass {name}=... ({hint})")
    return config[name]


def _steps(config: dict[str, Any], name: str, num_units: int, source: str) -> int:
    """The number of time steps: the number of per-step units, unless one unit is shared (then ``name`` is needed)."""
    if num_units > 1:
        return _agree(config, name, num_units, source)
    steps = _need(config, name, source, "one set of weights: shared by all steps or a single step")
    if steps > 1 and config.get("no_parameter_sharing"):
        raise ConversionError(f"{source}: {name}={steps} with no_parameter_sharing=True needs {steps} units; found 1")
    return int(steps)


def _initializer(keys: Keys, config: dict[str, Any], theirs: str, ours: str, num_layers: int, source: str) -> tuple:
    tensors, channels, multiscale = convert_recurrent_init(keys, theirs, ours, num_layers)
    channels = _agree(config, "initializer_channels", channels, source)
    multiscale = _agree(config, "initializer_multiscale", multiscale, source)
    dilations = config.get("initializer_dilations")
    if dilations is None:
        if len(channels) != 4:
            raise ConversionError(
                f"{source}: initializer_dilations is not stored in the weights and the default (1, 1, 2, 4) does not "
                f"fit {len(channels)} initializer convs; pass initializer_dilations=..."
            )
        dilations = (1, 1, 2, 4)
    return tensors, tuple(channels), tuple(dilations), multiscale


def _recurrentvarnet(keys: Keys, config: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    source = keys.source
    num_blocks = count_indices(keys, "block_list.")
    if num_blocks == 0:
        raise ConversionError(f"{source}: no 'block_list.*' keys: this is not a DIRECT RecurrentVarNet state dict")
    normalized = any(".regularizer.convgru." in k for k in keys.state)
    _agree(config, "normalized", normalized, source)
    reg = "regularizer.convgru." if normalized else "regularizer."
    num_layers = count_indices(keys, f"block_list.0.{reg}update_gates.")
    hidden = keys.state[f"block_list.0.{reg}conv_blocks.0.1.weight"].shape[0]
    in_channels = keys.state[f"block_list.0.{reg}conv_blocks.0.1.weight"].shape[1]
    if in_channels != 2:
        raise ConversionError(f"{source}: in_channels={in_channels}; only complex (2-channel) images are supported")
    if num_layers < 2:
        raise ConversionError(f"{source}: recurrent_num_layers={num_layers}; at least 2 are supported")
    _agree(config, "recurrent_num_layers", num_layers, source)
    _agree(config, "recurrent_hidden_channels", hidden, source)
    num_steps = _steps(config, "num_steps", num_blocks, source)
    shared = num_blocks == 1 and num_steps > 1
    state: dict[str, torch.Tensor] = {}
    for t in range(num_blocks):
        state[f"blocks.{t}.learning_rate"] = keys.take(f"block_list.{t}.learning_rate").reshape(())
        state.update(convert_gru_stack(keys, f"block_list.{t}.{reg}", f"blocks.{t}.regularizer.", num_layers))
    ours: dict[str, Any] = {
        "num_steps": num_steps,
        "hidden_channels": hidden,
        "num_layers": num_layers,
        "no_parameter_sharing": not shared,
        "gru_state_relu": True,
        "normalized": normalized,
        "learned_initializer": False,
    }
    if any(k.startswith("initializer.") for k in keys.state):
        tensors, channels, dilations, multiscale = _initializer(
            keys, config, "initializer.", "initializer.", num_layers, source
        )
        state.update(tensors)
        init = config.get("initializer_initialization") or "sense"
        mapping = {"sense": "sense_kspace", "zero_filled": "coil_sum_kspace"}
        if init not in mapping:
            raise ConversionError(
                f"{source}: initializer_initialization={init!r} is not supported; use one of {list(mapping)}"
            )
        ours.update(
            learned_initializer=True,
            initializer_channels=channels,
            initializer_dilations=dilations,
            initializer_multiscale=multiscale,
            initializer_input=mapping[init],
        )
    return state, ours


def _rim(keys: Keys, config: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    source = keys.source
    for flag in ("dense_connect", "instance_norm", "whiten_input"):
        if config.get(flag):
            raise ConversionError(f"{source}: {flag}=True is not supported")
    if config.get("replication_padding") is False:
        raise ConversionError(f"{source}: replication_padding=False is not supported")
    if config.get("steps", 1) != 1:
        raise ConversionError(
            f"{source}: steps={config['steps']!r} is not supported: only steps=1 (DIRECT's RIMConfig default) is "
            "reproduced; the time steps are set by length"
        )
    num_cells = count_indices(keys, "cell_list.")
    if num_cells == 0:
        raise ConversionError(f"{source}: no 'cell_list.*' keys: this is not a DIRECT RIM state dict")
    normalized = any(k.startswith("cell_list.0.convgru.") for k in keys.state)
    _agree(config, "normalized", normalized, source)
    reg = "convgru." if normalized else ""
    first = keys.state[f"cell_list.0.{reg}conv_blocks.0.1.weight"]
    hidden, in_channels = first.shape[0], first.shape[1]
    if in_channels != 4:
        raise ConversionError(f"{source}: the cell takes {in_channels} channels; only x_channels=2 (4 = image + grad)")
    num_layers = count_indices(keys, f"cell_list.0.{reg}update_gates.")
    if num_layers < 2:
        raise ConversionError(f"{source}: depth={num_layers}; at least 2 GRU layers are supported")
    _agree(config, "depth", num_layers, source)
    _agree(config, "hidden_channels", hidden, source)
    length = _steps(config, "length", num_cells, source)
    shared = num_cells == 1 and length > 1
    init = config.get("image_initialization") or "zero_filled"
    image_init = {"sense": "sense", "zero_filled": "coil_sum"}.get(init)
    if image_init is None:
        raise ConversionError(f"{source}: image_initialization={init!r} is not supported; use 'sense' or 'zero_filled'")
    scale = config.get("scale_loglikelihood")
    state: dict[str, torch.Tensor] = {}
    for t in range(num_cells):
        state.update(convert_gru_stack(keys, f"cell_list.{t}.{reg}", f"block.stacks.{t}.", num_layers))
    ours: dict[str, Any] = {
        "regularizer": "gru_stack",
        "num_steps": length,
        "hidden_channels": hidden,
        "num_layers": num_layers,
        "no_parameter_sharing": not shared,
        "skip_connections": config.get("skip_connections", True),
        "normalized": normalized,
        "image_init": image_init,
        "sigma": 1.0 / float(scale) if scale is not None else 1.0,
    }
    if any(k.startswith("initializer.") for k in keys.state):
        tensors, channels, dilations, multiscale = _initializer(
            keys, config, "initializer.", "block.initializer.", num_layers, source
        )
        state.update(tensors)
        ours.update(
            learned_initializer=True,
            initializer_channels=channels,
            initializer_dilations=dilations,
            initializer_multiscale=multiscale,
        )
    return state, ours


def _cirim(keys: Keys, config: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    source = keys.source
    num_cascades = count_indices(keys, "block_list.")
    if num_cascades == 0:
        raise ConversionError(f"{source}: no 'block_list.*' keys: this is not a DIRECT CIRIM state dict")
    _agree(config, "num_cascades", num_cascades, source)
    depth = count_indices(keys, "block_list.0.layers.")
    if depth != 2:
        raise ConversionError(f"{source}: depth={depth}; only depth=2 (two conv + IndRNN layers) is supported")
    _agree(config, "depth", depth, source)
    hidden = keys.state["block_list.0.layers.0.convs.conv_layer.weight"].shape[0]
    _agree(config, "recurrent_hidden_channels", hidden, source)
    residual_dc = keys.has("block_list.0.dc_weight")  # only built with no_parameter_sharing=False
    _agree(config, "no_parameter_sharing", not residual_dc, source)
    time_steps = _need(config, "time_steps", source, "DIRECT's config default is 8")
    state: dict[str, torch.Tensor] = {}
    for c in range(num_cascades):
        theirs, ours = f"block_list.{c}.", f"cascades.{c}."
        for i in range(2):
            weight = keys.take(f"{theirs}layers.{i}.convs.conv_layer.weight")
            if i == 0:
                if weight.shape[1] != 4:
                    raise ConversionError(f"{source}: the first conv takes {weight.shape[1]} channels; expected 4")
                weight = weight[:, [2, 3, 0, 1]]  # DIRECT: [grad, eta]; ours: [eta, grad]
            state[f"{ours}convs.{i}.conv.weight"] = weight
            state[f"{ours}convs.{i}.conv.bias"] = keys.take(f"{theirs}layers.{i}.convs.conv_layer.bias")
            state[f"{ours}cells.{i}.ih.weight"] = keys.take(f"{theirs}layers.{i}.recurrent.ih.weight")
            state[f"{ours}cells.{i}.ih.bias"] = keys.take(f"{theirs}layers.{i}.recurrent.ih.bias")
            state[f"{ours}cells.{i}.hh"] = keys.take(f"{theirs}layers.{i}.recurrent.hh")
        state[f"{ours}out.conv.weight"] = keys.take(f"{theirs}final_layer.0.conv_layer.weight")
        if residual_dc:
            state[f"dc.{c}.dc_weight"] = torch.ones((), dtype=state[f"{ours}out.conv.weight"].dtype)
    keys.drop(["dc_weight", *keys.matching(r"block_list\.\d+\.dc_weight")])  # defined but never used by DIRECT
    ours_config: dict[str, Any] = {
        "num_cascades": num_cascades,
        "num_steps": time_steps,
        "hidden_channels": hidden,
        "cell": "indrnn",
        "keep_prediction": True,
        "output_relu": True,
        "fixed_step_input": True,
        "carry_hidden": residual_dc,
        "explicit_dc": residual_dc,
        "explicit_dc_form": "kspace_residual",
    }
    return state, ours_config


_CONVERTERS = {"recurrentvarnet": _recurrentvarnet, "rim": _rim, "cirim": _cirim}


def convert_direct_state_dict(
    state_dict: dict[str, torch.Tensor], model: str = "recurrentvarnet", **config: Any
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Convert a DIRECT state dict to ours.

    Args:
        state_dict: DIRECT's ``model.state_dict()`` (the ``"model"`` entry of its ``model_<iter>.pt``).
        model: ``"recurrentvarnet"``, ``"rim"`` or ``"cirim"``.
        **config: DIRECT's constructor / config values (see the module docstring for which are needed).

    Returns:
        ``(state_dict, config)`` for :func:`recon.models.create_model` ``(model, **config)``.

    Raises:
        ConversionError: (a ValueError) naming the missing / unknown keys or the unsupported setting.
    """
    if model not in _CONVERTERS:
        raise ValueError(f"unknown model {model!r}; DIRECT checkpoints of {sorted(_CONVERTERS)} can be loaded")
    unknown = sorted(set(config) - _ACCEPTED[model])
    if unknown:
        raise ValueError(f"unknown DIRECT {model} config keys {unknown}; accepted: {sorted(_ACCEPTED[model])}")
    keys = Keys(state_dict, f"DIRECT {model}")
    state, ours = _CONVERTERS[model](keys, config)
    keys.finish()
    return state, ours


def load_direct_checkpoint(source: StateSource, model: str = "recurrentvarnet", **config: Any) -> nn.Module:
    """Build our model from a DIRECT checkpoint.

    Args:
        source: a state dict, or a path to ``.safetensors`` / a weights-only ``.pt`` (DIRECT's ``model_<iter>.pt``
            is accepted when it unpickles with ``weights_only=True``; its ``"model"`` entry is used).
        model: ``"recurrentvarnet"``, ``"rim"`` or ``"cirim"``.
        **config: DIRECT's config values (see :func:`convert_direct_state_dict`).

    Returns:
        Our model in eval mode, with the converted weights (dtype as stored).
    """
    from recon.models import build_model

    state, _ = read_state_dict(source)
    converted, ours = convert_direct_state_dict(state, model, **config)
    # built empty and cast first, so weights stored in float64 load without rounding to float32
    net = build_model(model, ours)
    dtype = next(iter(converted.values())).dtype
    net = net.to(dtype)
    net.load_state_dict(converted, strict=True)
    return net.eval()
