"""Pairs: readers and bad input, which encoder sees which column, what enters the queue, explicit negatives."""
import json

import pytest
import torch
import torch.nn.functional as F

from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig
from textmoco.data.retrieval import PairDataset
from textmoco.losses import compute_loss_from_embeddings, info_nce

ANCHORS = [f"question number {w}" for w in "one two three four five six seven eight".split()]
POSITIVES = [f"the passage that answers about {w} and more" for w in "red green blue cyan pink gold gray teal".split()]


def test_reads_csv_tsv_jsonl_and_datasets(tmp_path):
    import datasets

    (tmp_path / "p.csv").write_text("anchor,positive,negative\n" + "".join(f"{a},{p},x{i}\n" for i, (a, p) in
                                                                          enumerate(zip(ANCHORS, POSITIVES))))
    (tmp_path / "p.tsv").write_text("anchor\tpositive\n" + "".join(f"{a}\t{p}\n" for a, p in zip(ANCHORS, POSITIVES)))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"anchor": a, "positive": p, "id": 7}) + "\n"
                                              for a, p in zip(ANCHORS, POSITIVES)))
    csv_ds = PairDataset.from_file(tmp_path / "p.csv")
    assert csv_ds[2] == (ANCHORS[2], POSITIVES[2], ("x2",))
    assert PairDataset.from_file(tmp_path / "p.tsv")[1] == (ANCHORS[1], POSITIVES[1])
    js = PairDataset.from_file(tmp_path / "p.jsonl")
    assert js.sample_id(3) == 7 and csv_ds.sample_id(3) == 3
    hf = PairDataset.from_dataset(datasets.Dataset.from_dict({"anchor": ANCHORS, "positive": POSITIVES}))
    assert hf[0] == (ANCHORS[0], POSITIVES[0])


@pytest.mark.parametrize("content,match", [
    ("anchor,text\na,b\nc,d\n", "no positive column 'positive'"),
    ("anchor,positive\na,b\nc,\n", "missing or empty 'positive', the first is data row 2"),
    ("anchor,positive\na,b\n,d\n", "missing or empty 'anchor'"),
])
def test_bad_pairs_files_are_clear_errors(tmp_path, content, match):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(ValueError, match=match):
        PairDataset.from_file(tmp_path / "bad.csv")


def test_missing_positive_in_jsonl_row(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "c"}\n')
    with pytest.raises(ValueError, match="missing or empty 'positive'"):
        PairDataset.from_file(tmp_path / "p.jsonl")


def no_dropout(model):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def make_pair_trainer(out, tiny_bert, negatives=None, **kw):
    from textmoco import MoCoModel
    from textmoco.encoders.text import TextEncoder
    from textmoco.trainer import MoCoTrainer

    torch.manual_seed(0)
    model = MoCoModel(TextEncoder(tiny_bert, max_length=24))
    no_dropout(model)
    train = dict(output_dir=str(out), batch_size=4, max_steps=1, lr=1e-3, progress=False, momentum=1.0,
                 momentum_schedule="constant")
    train.update(kw)
    ds = PairDataset(ANCHORS, POSITIVES, negatives, ids=[10 + i for i in range(len(ANCHORS))])
    return MoCoTrainer(model, ds, ObjectiveConfig(temperature=0.1), QueueConfig(size=8), TrainConfig(**train))


def test_query_encodes_anchor_key_encodes_positive_and_queue_holds_positives(tmp_path, tiny_bert):
    trainer = make_pair_trainer(tmp_path, tiny_bert)
    seen = {"query": [], "key": []}
    tok = trainer.unwrapped.encoder.tokenizer
    for name in seen:
        branch = getattr(trainer.unwrapped, name)
        branch.encoder.register_forward_pre_hook(
            lambda mod, args, name=name: seen[name].extend(tok.batch_decode(args[0]["input_ids"],
                                                                            skip_special_tokens=True)))
    initial_key = {k: v.clone() for k, v in trainer.unwrapped.key.state_dict().items()}
    trainer.fit()
    assert seen["query"] and set(seen["query"]) <= {a.lower() for a in ANCHORS}
    assert seen["key"] and set(seen["key"]) <= {p.lower() for p in POSITIVES}
    # momentum 1: the key encoder is still the initial copy, so the queue holds exactly its keys of the positives
    filled = trainer.queue.filled
    ids = trainer.queue.ids[filled].tolist()
    assert len(ids) == 4 and all(10 <= i < 18 for i in ids)
    trainer.unwrapped.key.load_state_dict(initial_key)
    enc = trainer.unwrapped.key.encoder
    enc.eval()
    expected = F.normalize(enc(enc.collate([POSITIVES[i - 10] for i in ids])), dim=-1)
    assert torch.allclose(trainer.queue.keys[filled].float(), expected, atol=1e-5)


def test_explicit_negatives_are_key_encoded_and_join_their_anchor(tmp_path, tiny_bert):
    negs = [(f"an unrelated distractor {i}", f"another one {i}") for i in range(len(ANCHORS))]
    trainer = make_pair_trainer(tmp_path, tiny_bert, negatives=negs)
    model = trainer.unwrapped
    items = [PairDataset(ANCHORS, POSITIVES, negs)[i] for i in range(3)]
    out = model(model.encoder.collate(items))
    assert out.k_neg.shape == (3, 2, out.k.shape[1]) and not out.k_neg.requires_grad
    model.eval()
    with torch.no_grad():
        direct = model.key(model.encoder.collate([n for it in items for n in it[2]])).view(3, 2, -1)
        out = model(model.encoder.collate(items))
    assert torch.allclose(out.k_neg, direct, atol=1e-6)
    # the loss: each anchor's own explicit negatives are an extra block of its q->k InfoNCE (empty queue here)
    cfg = ObjectiveConfig(temperature=0.1, dual_weight=0.0)
    res = compute_loss_from_embeddings(out.q, out.k, None, (None, None, None), cfg, extra_key_negatives=out.k_neg)
    manual = info_nce((out.q * out.k).sum(1), [torch.einsum("bd,bmd->bm", out.q, out.k_neg)], 0.1).mean()
    assert torch.allclose(res.loss, manual, atol=1e-6) and res.loss > 0
    trainer.fit()  # and the trainer passes them through
    assert trainer.state["step"] == 1
