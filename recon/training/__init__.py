"""Training of the recon models: losses, the loop (AdamW, LR schedule, clipping, AMP, DDP) and checkpoints."""

from recon.training.checkpoint import load_checkpoint, load_model, save_checkpoint
from recon.training.loop import TrainConfig, TrainResult, build_scheduler, train
from recon.training.losses import l1_loss, ssim_loss, step_weights, weighted_prediction_loss

__all__ = [
    "TrainConfig",
    "TrainResult",
    "build_scheduler",
    "l1_loss",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "ssim_loss",
    "step_weights",
    "train",
    "weighted_prediction_loss",
]
