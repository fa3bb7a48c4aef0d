"""textmoco: momentum contrast with a dual-view loss and cosine hard-negative selection (arXiv 2501.16360),
for sentence embeddings and vision transformers, on Hugging Face Accelerate."""
from .config import ObjectiveConfig, QueueConfig, TrainConfig
from .losses import LossOutput, NegativeSelection, compute_loss_from_embeddings, info_nce, select_hard_negatives
from .model import MoCoModel, MoCoOutput
from .momentum import ema_update, momentum_at
from .queue import NegativeQueue

__version__ = "0.1.0"

__all__ = ["ObjectiveConfig", "QueueConfig", "TrainConfig", "LossOutput", "NegativeSelection",
           "compute_loss_from_embeddings", "info_nce", "select_hard_negatives", "MoCoModel", "MoCoOutput",
           "ema_update", "momentum_at", "NegativeQueue", "MoCoTrainer", "__version__"]


def __getattr__(name):  # the trainer pulls in accelerate/transformers: import it lazily
    if name == "MoCoTrainer":
        from .trainer import MoCoTrainer
        return MoCoTrainer
    raise AttributeError(name)
