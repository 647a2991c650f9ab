"""Training: patch sampling, losses, the training loop, checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, read_card, save_checkpoint
from .loop import TrainConfig, TrainEvent, fit

__all__ = ["CheckpointError", "TrainConfig", "TrainEvent", "fit", "load_checkpoint", "read_card", "save_checkpoint"]
