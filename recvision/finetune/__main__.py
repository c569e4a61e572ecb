"""``python -m recvision.finetune`` (and ``torchrun ... -m recvision.finetune``): the ``recvision-finetune`` command."""

import sys

from recvision.finetune.train import main

if __name__ == "__main__":
    sys.exit(main())
