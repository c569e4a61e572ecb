"""Helpers shared by the ops: input guards for kernel wrappers, the decay-table cache and numerical comparison for
tests."""

from .cache import DecayTableCache, decay_key
from .testing import assert_close, relative_rms_error

__all__ = ["DecayTableCache", "assert_close", "decay_key", "relative_rms_error"]
