"""Building blocks of the DIRECT / ATOMMIC converters: key bookkeeping and the layouts shared by both.

Layouts mapped here (both projects use the same ``Conv2dGRU`` / ``RecurrentInit`` classes):

- ``Conv2dGRU`` -> :class:`recon.models.blocks.ConvGRUStack`. Their ``conv_blocks.{i}`` is
  ``Sequential(ReplicationPad2d, Conv2d)``: ``conv_blocks.{i}.1`` -> ``convs.{i}.1`` for ``i < L`` and
  ``conv_blocks.{L}.1`` -> ``out.1``. Their gates are three convs on ``[x, h]`` (``2H`` input channels):
  ``u = sigma(W_u [x, h] + b_u)``, ``r = sigma(W_r [x, h] + b_r)``, ``n = tanh(W_o [x, r h] + b_o)``,
  ``h' = h (1 - u) + n u``. Ours is ``h' = (1 - z) n + z h`` with ``z = sigma(W_iz x + W_hz h + b_z)``, so
  ``z = 1 - u`` exactly when ``W_z = -W_u`` and ``b_z = -b_u`` (``sigma(-a) = 1 - sigma(a)``). The first ``H`` input
  channels of each gate conv act on ``x`` (-> our ``ih``, which carries the bias), the last ``H`` on ``h`` / ``r h``
  (-> our bias-free ``hh``); our gate order in the ``3H`` output channels is (reset, update, new).
- ``RecurrentInit`` / DIRECT ``RIMInit`` -> :class:`recon.models.blocks.RecurrentInit`:
  ``conv_blocks.{i}.1`` -> ``convs.{i}.1``, ``out_blocks.{j}.0`` -> ``heads.{j}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

__all__ = ["Keys", "ConversionError", "convert_gru_stack", "convert_recurrent_init", "count_indices"]


class ConversionError(ValueError):
    """A foreign checkpoint that cannot be mapped onto our model (names the keys or settings involved)."""


class Keys:
    """A foreign state dict being consumed: :meth:`take` removes a key (error naming it if absent), and
    :meth:`finish` raises naming every key that was never used.

    Args:
        state: the foreign state dict.
        source: a label for error messages (e.g. ``"DIRECT RecurrentVarNet"``).
    """

    def __init__(self, state: dict[str, torch.Tensor], source: str) -> None:
        self.state = dict(state)
        self.source = source
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str) -> torch.Tensor:
        if key not in self.state:
            near = sorted(k for k in self.state if k.rsplit(".", 1)[0] == key.rsplit(".", 1)[0])[:5]
            raise ConversionError(
                f"{self.source} checkpoint lacks key {key!r}" + (f" (keys with that prefix: {near})" if near else "")
            )
        self.used.add(key)
        return self.state[key]

    def drop(self, keys: Iterable[str]) -> None:
        """Mark keys as deliberately unused."""
        self.used.update(k for k in keys if k in self.state)

    def matching(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return sorted(k for k in self.state if regex.fullmatch(k))

    def finish(self) -> None:
        unknown = sorted(set(self.state) - self.used)
        if unknown:
            shown = unknown[:12] + ([f"... ({len(unknown) - 12} more)"] if len(unknown) > 12 else [])
            raise ConversionError(f"{self.source} checkpoint has keys that do not map onto our model: {shown}")


def count_indices(keys: Keys, prefix: str) -> int:
    """Number of consecutive indices ``i`` for which some key starts with ``f"{prefix}{i}."``."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in keys.state):
        n += 1
    return n


def _gate(keys: Keys, prefix: str, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    if keys.has(f"{prefix}.1.weight"):
        raise ConversionError(
            f"{keys.source}: {prefix} has a layer before its conv (instance_norm=True); instance-normalised GRU gates "
            "are not supported"
        )
    weight, bias = keys.take(f"{prefix}.0.weight"), keys.take(f"{prefix}.0.bias")
    if weight.shape[:2] != (hidden, 2 * hidden) or weight.shape[2:] != (1, 1):
        raise ConversionError(
            f"{keys.source}: {prefix}.0.weight has shape {tuple(weight.shape)}; expected "
            f"({hidden}, {2 * hidden}, 1, 1) (1x1 GRU convolutions on [x, h]; gru_kernel_size != 1 is not supported)"
        )
    return weight, bias


def convert_gru_stack(keys: Keys, theirs: str, ours: str, num_layers: int) -> dict[str, torch.Tensor]:
    """Map a ``Conv2dGRU`` at prefix ``theirs`` (ending in ``.``) to a ``ConvGRUStack`` at prefix ``ours``."""
    out: dict[str, torch.Tensor] = {}
    hidden = keys.take(f"{theirs}conv_blocks.0.1.weight").shape[0]
    keys.used.discard(f"{theirs}conv_blocks.0.1.weight")
    for i in range(num_layers + 1):
        src = f"{theirs}conv_blocks.{i}"
        if keys.has(f"{src}.0.weight"):
            raise ConversionError(f"{keys.source}: {src} has no padding layer (replication_padding=False): unsupported")
        weight, bias = keys.take(f"{src}.1.weight"), keys.take(f"{src}.1.bias")
        expected_in = hidden if i > 0 else weight.shape[1]
        if weight.shape[1] != expected_in:
            raise ConversionError(
                f"{keys.source}: {src}.1.weight has {weight.shape[1]} input channels; expected {expected_in} "
                "(dense_connect > 0 is not supported)"
            )
        dst = f"{ours}convs.{i}.1" if i < num_layers else f"{ours}out.1"
        out[f"{dst}.weight"], out[f"{dst}.bias"] = weight, bias
    for layer in range(num_layers):
        w_r, b_r = _gate(keys, f"{theirs}reset_gates.{layer}", hidden)
        w_u, b_u = _gate(keys, f"{theirs}update_gates.{layer}", hidden)
        w_o, b_o = _gate(keys, f"{theirs}out_gates.{layer}", hidden)
        # our z = 1 - their u: negate the update gate's pre-activation
        gates = [w_r, -w_u, w_o]
        out[f"{ours}cells.{layer}.ih.weight"] = torch.cat([w[:, :hidden] for w in gates])
        out[f"{ours}cells.{layer}.hh.weight"] = torch.cat([w[:, hidden:] for w in gates])
        out[f"{ours}cells.{layer}.ih.bias"] = torch.cat([b_r, -b_u, b_o])
    return out


def convert_recurrent_init(
    keys: Keys, theirs: str, ours: str, num_layers: int
) -> tuple[dict[str, torch.Tensor], tuple[int, ...], int]:
    """Map a ``RecurrentInit`` / ``RIMInit`` at ``theirs`` to ours at ``ours``.

    Returns:
        ``(tensors, channels, multiscale_depth)`` inferred from the weight shapes.
    """
    out: dict[str, torch.Tensor] = {}
    n_convs = count_indices(keys, f"{theirs}conv_blocks.")
    channels = []
    for i in range(n_convs):
        weight = keys.take(f"{theirs}conv_blocks.{i}.1.weight")
        out[f"{ours}convs.{i}.1.weight"] = weight
        out[f"{ours}convs.{i}.1.bias"] = keys.take(f"{theirs}conv_blocks.{i}.1.bias")
        channels.append(weight.shape[0])
    n_heads = count_indices(keys, f"{theirs}out_blocks.")
    if n_heads != num_layers:
        raise ConversionError(f"{keys.source}: the initializer has {n_heads} output convs; expected {num_layers}")
    fused = keys.state[f"{theirs}out_blocks.0.0.weight"].shape[1]
    multiscale = next((m for m in range(1, n_convs + 1) if sum(channels[-m:]) == fused), None)
    if multiscale is None:
        raise ConversionError(
            f"{keys.source}: initializer heads take {fused} channels, which is no sum of trailing conv channels "
            f"{tuple(channels)}"
        )
    for j in range(n_heads):
        out[f"{ours}heads.{j}.weight"] = keys.take(f"{theirs}out_blocks.{j}.0.weight")
        out[f"{ours}heads.{j}.bias"] = keys.take(f"{theirs}out_blocks.{j}.0.bias")
    return out, tuple(channels), multiscale
