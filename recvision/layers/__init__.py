"""Building blocks shared by the recvision backbones."""

from .mlp import Mlp
from .retention import RETENTION_MODES, MultiHeadRetention, vir_log_decay

__all__ = ["Mlp", "RETENTION_MODES", "MultiHeadRetention", "vir_log_decay"]
