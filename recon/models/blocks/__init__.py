"""Recurrent cells and the blocks built from them, shared by the recurrent reconstruction models (RIM, CIRIM,
RecurrentVarNet)."""

from __future__ import annotations

from enum import Enum

from torch import nn

from recon.models.blocks.conv_gru import ConvGRUCell
from recon.models.blocks.conv_gru_stack import ConvGRUStack
from recon.models.blocks.conv_mgu import ConvMGUCell
from recon.models.blocks.indrnn import IndRNNCell
from recon.models.blocks.recurrent_init import RecurrentInit

__all__ = ["CellType", "ConvGRUCell", "ConvGRUStack", "ConvMGUCell", "IndRNNCell", "RecurrentInit", "make_cell"]


class CellType(str, Enum):
    """Recurrent cell of a RIM block."""

    GRU = "gru"
    MGU = "mgu"
    INDRNN = "indrnn"


def make_cell(
    cell: CellType | str, input_channels: int, hidden_channels: int, kernel_size: int = 1, dilation: int = 1
) -> nn.Module:
    """Build a recurrent cell by type.

    Args:
        cell: ``"gru"``, ``"mgu"`` or ``"indrnn"``.
        input_channels: channels of the cell's input.
        hidden_channels: channels of its state.
        kernel_size: kernel size of its convolutions.
        dilation: their dilation.

    Returns:
        The cell, called as ``cell(x, h) -> h'``.

    Raises:
        ValueError: for an unknown cell type, listing the valid ones.
    """
    try:
        cell = CellType(cell)
    except ValueError:
        raise ValueError(f"unknown cell {cell!r}; valid: {[c.value for c in CellType]}") from None
    classes = {CellType.GRU: ConvGRUCell, CellType.MGU: ConvMGUCell, CellType.INDRNN: IndRNNCell}
    return classes[cell](input_channels, hidden_channels, kernel_size=kernel_size, dilation=dilation)
