"""Fine-tune any timm image classifier (recvision's backbones or timm's own) on an image folder or a built-in dataset.

In timm's idiom: the model comes from ``timm.create_model``, the optimizer from ``timm.optim.create_optimizer_v2``, the
learning-rate schedule from ``timm.scheduler.create_scheduler_v2`` (stepped every update), the preprocessing and
augmentation from ``timm.data`` (``resolve_data_config``, ``create_transform``, optional ``Mixup``/CutMix). AMP runs
on CUDA (bf16 where supported, else fp16 with a gradient scaler) and is off on the CPU. Under ``torchrun`` the model is
wrapped in ``DistributedDataParallel`` (NCCL on CUDA, gloo on the CPU) and every process reads its own shard through
a ``DistributedSampler``; ``--batch-size`` is per process.

Checkpoints (``--output DIR``): ``last.safetensors`` / ``best.safetensors`` hold the model weights, ``last.state.pt``
the optimizer and gradient-scaler state, the epoch and update counters and the history, read back with
``torch.load(weights_only=True)``. ``--resume DIR`` continues a run exactly where it stopped: data order and
randomness are seeded per epoch, and the learning rate is recomputed from the update count.

Layout (timm's ``train.py`` and ``timm.utils`` split into small modules): :mod:`~recvision.finetune.args` (the
command line), :mod:`~recvision.finetune.distributed` (processes, devices, precision, seeds),
:mod:`~recvision.finetune.data`, :mod:`~recvision.finetune.model`, :mod:`~recvision.finetune.checkpoint` and
:mod:`~recvision.finetune.train` (the epoch loop and :func:`run`).

Examples::

    recvision-finetune --model vir_femto --data digits --img-size 32 --epochs 5 --output runs/digits
    recvision-finetune --model vit_tiny_patch16_224 --data path/to/imagefolder --img-size 224 --pretrained-file w.pth
    torchrun --nproc-per-node 2 -m recvision.finetune --model lightnet_femto --data digits --epochs 3
"""

from recvision.finetune.args import PROG, FinetuneError, build_parser, parse_args
from recvision.finetune.checkpoint import load_checkpoint, save_checkpoint
from recvision.finetune.data import make_loader
from recvision.finetune.distributed import seed_everything
from recvision.finetune.model import create_finetune_model
from recvision.finetune.train import FinetuneResult, evaluate, format_results, main, run, train_one_epoch

__all__ = [
    "PROG",
    "FinetuneError",
    "FinetuneResult",
    "build_parser",
    "create_finetune_model",
    "evaluate",
    "format_results",
    "load_checkpoint",
    "main",
    "make_loader",
    "parse_args",
    "run",
    "save_checkpoint",
    "seed_everything",
    "train_one_epoch",
]
