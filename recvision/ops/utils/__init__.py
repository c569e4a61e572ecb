"""Helpers shared by the ops: input guards for kernel wrappers and numerical comparison for tests."""

from .testing import assert_close, relative_rms_error

__all__ = ["assert_close", "relative_rms_error"]
