"""Building blocks shared by the recvision backbones."""

from .retention import RETENTION_MODES, MultiHeadRetention, vir_log_decay

__all__ = ["RETENTION_MODES", "MultiHeadRetention", "vir_log_decay"]
