"""VisionEncoder + ProjectionHead through the lead's MoCoTrainer: a few steps on tiny images, then export."""
import torch

from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig
from textmoco.data.images import ImageDataset
from textmoco.encoders.heads import ProjectionHead
from textmoco.encoders.vision import VisionEncoder
from textmoco.evaluation.probe import evaluate_features
from textmoco.model import MoCoModel
from textmoco.trainer import MoCoTrainer

torch.set_num_threads(1)


def test_vision_trainer_smoke(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.arange(24) % 3
    enc = VisionEncoder.from_scratch(image_size=16, patch_size=4, hidden_size=16, num_layers=1, heads=2, seed=0)
    model = MoCoModel(enc, ProjectionHead(enc.embedding_dim, 32, 8))
    objective = ObjectiveConfig(temperature=0.2, dual_weight=0.5, selection="top_k", top_k=8, id_guard=True)
    trainer = MoCoTrainer(model, ImageDataset(images), objective, QueueConfig(size=20),
                          TrainConfig(output_dir=str(tmp_path / "run"), batch_size=8, max_steps=4, lr=1e-3,
                                      momentum=0.9, progress=False))
    before = enc.encode(images).clone()
    history = trainer.fit()
    assert len(history) == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    assert trainer.queue.num_filled == 20
    after = enc.encode(images)
    assert not torch.allclose(before, after)
    res = evaluate_features(enc, (images, labels), (images, labels), k=5)
    assert 0.0 <= res["knn"] <= 1.0 and 0.0 <= res["linear_probe"] <= 1.0
    trainer.export(str(tmp_path / "export"))
    again = VisionEncoder.from_pretrained(str(tmp_path / "export"), views="digits")
    assert torch.allclose(again.encode(images), after, atol=1e-5)
