"""``python -m recon``: the ``recon`` command line (:mod:`recon.cli`)."""

import sys

from recon.cli import main

sys.exit(main())
