"""recvision: recurrent vision backbones registered in timm, built on tested linear-recurrence ops.

Importing the package registers its models with timm, so ``timm.create_model("vir_base")`` works.
"""

from . import backbones, config, layers, ops  # noqa: F401

__version__ = "0.1.0"
