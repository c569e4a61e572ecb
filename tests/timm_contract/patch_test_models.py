"""Write a copy of timm's ``tests/test_models.py`` that also tests recvision's model families.

Usage: ``python patch_test_models.py SOURCE DEST``. The copy imports :mod:`recvision` (registering ``vir_*``,
``lightnet_*`` and ``plstm_*``) and lists the families where timm lists its ViT family: in the non-standard filters
(matched on model names) and in the forward-intermediates filters (matched on the module that registered the
model). Exits with a one-line error if timm's file no longer has the lists it patches.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FAMILIES = ("vir", "lightnet", "plstm")
# the families' sizes and their small test_* models (timm lists its own 'test_vit*' there too)
NON_STD = [f"'{f}_*'" for f in FAMILIES] + [f"'test_{f}*'" for f in FAMILIES]


def patch(source: str) -> str:
    """The patched text of ``tests/test_models.py``."""
    edits = (
        (r"^import timm\n", "import timm\nimport recvision  # noqa: F401  (registers vir_*, lightnet_*, plstm_*)\n"),
        (r"^NON_STD_FILTERS = \[\n", "NON_STD_FILTERS = [\n    " + ", ".join(NON_STD) + ",\n"),
        (r"^FEAT_INTER_FILTERS = \[\n", "FEAT_INTER_FILTERS = [\n    " + ", ".join(f"'{f}'" for f in FAMILIES) + ",\n"),
    )
    for pattern, replacement in edits:
        source, count = re.subn(pattern, replacement, source, count=1, flags=re.MULTILINE)
        if count != 1:
            raise SystemExit(f"patch_test_models: timm's test_models.py has no line matching {pattern!r}")
    return source


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python patch_test_models.py SOURCE DEST")
    Path(sys.argv[2]).write_text(patch(Path(sys.argv[1]).read_text()))


if __name__ == "__main__":
    main()
