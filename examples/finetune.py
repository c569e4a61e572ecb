"""Fine-tune a timm model (recvision's backbones or timm's own) on an image folder or a built-in dataset.

The same as the ``recvision-finetune`` console script; see :mod:`recvision.finetune` for the options. Examples::

    python examples/finetune.py --model vir_femto --data digits --img-size 64 --epochs 5 --output runs/digits
    torchrun --nproc-per-node 2 examples/finetune.py --model lightnet_femto --data digits --epochs 3
"""

import sys

from recvision.finetune import main

if __name__ == "__main__":
    sys.exit(main())
