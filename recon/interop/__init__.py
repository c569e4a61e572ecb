"""Loading DIRECT and ATOMMIC checkpoints of RIM / CIRIM / RecurrentVarNet into ``recon.models``.

The reference projects are not dependencies: only their weight files are read (safetensors, or weights-only
``torch.load``), their parameter names and layouts are mapped onto ours, and our models are configured with the
options that reproduce their forward passes (see :mod:`recon.interop.direct` and :mod:`recon.interop.atommic` for
every mapping, :mod:`recon.interop.layout` for the data layouts). Reproduction is tested against outputs of the
reference implementations stored in ``tests/data/interop`` (written by ``tests/interop/make_fixtures.py``).
"""

from recon.interop._convert import ConversionError
from recon.interop._io import read_state_dict
from recon.interop.atommic import convert_atommic_state_dict, load_atommic_checkpoint
from recon.interop.direct import convert_direct_state_dict, load_direct_checkpoint
from recon.interop.layout import from_real_pair, to_real_pair_image

__all__ = [
    "ConversionError",
    "convert_atommic_state_dict",
    "convert_direct_state_dict",
    "from_real_pair",
    "load_atommic_checkpoint",
    "load_direct_checkpoint",
    "read_state_dict",
    "to_real_pair_image",
]
