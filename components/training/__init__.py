"""Training: the VPO/PPO trainer, its loss, the supervised warm start, checkpoints, DDP."""

from components.training.checkpoint import CheckpointState, latest_checkpoint, load_checkpoint
from components.training.trainer import TrainCallback, TrainResult, train, train_on_task

__all__ = [
    "CheckpointState", "TrainCallback", "TrainResult", "latest_checkpoint", "load_checkpoint", "train",
    "train_on_task",
]
