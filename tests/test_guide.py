"""The guide guard (guide_threshold): negatives whose cosine under the frozen start model is above the threshold
are dropped — checked against slow loop references, in the queue terms and the key term's batch negatives."""
import math

import pytest
import torch
import torch.nn.functional as F

from textmoco.config import ObjectiveConfig
from textmoco.guide import build_guide
from textmoco.losses import Guide, compute_loss_from_embeddings


def _case(B=6, K=20, D=8, N=30, Dg=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, D, generator=g), dim=1)
    k = F.normalize(torch.randn(B, D, generator=g), dim=1)
    ids = torch.randperm(N, generator=g)[:B]
    keys = F.normalize(torch.randn(K, D, generator=g), dim=1)
    qids = torch.randint(0, N, (K,), generator=g)
    guide = Guide(F.normalize(torch.randn(N, Dg, generator=g), dim=1),
                  F.normalize(torch.randn(N, Dg, generator=g), dim=1))
    return q, k, ids, (keys, qids, None), guide


def _reference_q2k(q, k, ids, queue, guide, cfg, keep=None):
    keys, qids, _ = queue
    losses = []
    for i in range(q.shape[0]):
        pos = float(q[i] @ k[i]) / cfg.temperature
        negs = [float(q[i] @ keys[n]) / cfg.temperature for n in range(keys.shape[0])
                if float(guide.anchor[ids[i]] @ guide.key[qids[n]]) <= cfg.guide_threshold
                and (keep is None or keep(i, n))]
        losses.append(-pos + math.log(math.exp(pos) + sum(math.exp(x) for x in negs)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("filter_active", [True, False])
def test_guide_guard_equals_loop_reference_and_is_active_in_warmup(filter_active):
    q, k, ids, queue, guide = _case()
    cfg = ObjectiveConfig(dual_weight=0.0, selection="none", id_guard=False, guard_threshold=None,
                          guide_threshold=0.2)
    out = compute_loss_from_embeddings(q, k, ids, queue, cfg, filter_active, guide=guide)
    dropped = int((guide.anchor[ids] @ guide.key[queue[1]].t() > 0.2).sum())
    assert 0 < dropped < q.shape[0] * queue[0].shape[0]  # the case exercises the guard
    assert float(out.loss) == pytest.approx(_reference_q2k(q, k, ids, queue, guide, cfg), rel=1e-5)


def test_guide_guard_with_top_k_keeps_the_hardest_unguarded_slots():
    q, k, ids, queue, guide = _case(seed=1)
    cfg = ObjectiveConfig(dual_weight=0.0, selection="top_k", top_k=4, id_guard=False, guard_threshold=None,
                          guide_threshold=0.1)
    keys, qids, _ = queue
    allowed = guide.anchor[ids] @ guide.key[qids].t() <= 0.1
    scores = (q @ keys.t()).masked_fill(~allowed, -2.0)
    top = scores.topk(4, dim=1).indices

    def keep(i, n):
        return n in top[i].tolist()

    out = compute_loss_from_embeddings(q, k, ids, queue, cfg, True, guide=guide)
    assert float(out.loss) == pytest.approx(_reference_q2k(q, k, ids, queue, guide, cfg, keep), rel=1e-5)


def test_guide_guard_drops_batch_negatives_of_the_key_term():
    q, k, ids, queue, guide = _case(seed=2)
    cfg = ObjectiveConfig(dual_weight=1.0, key_negatives="batch", selection="none", id_guard=False,
                          guard_threshold=None, guide_threshold=0.0)
    out = compute_loss_from_embeddings(q, k, ids, queue, cfg, True, guide=guide)
    losses = []
    for i in range(q.shape[0]):
        pos = float(k[i] @ q[i]) / cfg.temperature
        negs = [float(k[i] @ q[j]) / cfg.temperature for j in range(q.shape[0])
                if j != i and float(guide.key[ids[i]] @ guide.anchor[ids[j]]) <= 0.0]
        losses.append(-pos + math.log(math.exp(pos) + sum(math.exp(x) for x in negs)))
    assert float(out.stats["loss_k2q"]) == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_guide_off_or_loose_changes_nothing():
    q, k, ids, queue, guide = _case(seed=3)
    base = ObjectiveConfig(selection="top_k", top_k=5, guard_threshold=None)
    plain = compute_loss_from_embeddings(q, k, ids, queue, base, True)
    unused = compute_loss_from_embeddings(q, k, ids, queue, base, True, guide=guide)  # threshold None: ignored
    loose = compute_loss_from_embeddings(q, k, ids, queue, ObjectiveConfig(selection="top_k", top_k=5,
                                         guard_threshold=None, guide_threshold=1.0), True, guide=guide)
    assert float(unused.loss) == float(plain.loss)
    assert float(loose.loss) == pytest.approx(float(plain.loss), rel=1e-6)


def test_build_guide_normalises_and_shares_the_table_for_single_texts():
    table = {"a": [3.0, 4.0], "b": [0.0, 2.0]}
    guide = build_guide(lambda texts: torch.tensor([table[t] for t in texts]), ["a", "b"], batch_size=1)
    assert torch.allclose(guide.anchor, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    assert guide.key is guide.anchor


def test_guide_threshold_is_validated_and_required_by_the_trainer():
    with pytest.raises(ValueError, match="guide_threshold=1.5 is invalid"):
        ObjectiveConfig(guide_threshold=1.5)


def test_trainer_refuses_guide_threshold_without_a_guide(tmp_path):
    from textmoco.config import QueueConfig, TrainConfig
    from textmoco.encoders.vector import VectorEncoder
    from textmoco.model import MoCoModel
    from textmoco.trainer import MoCoTrainer

    model = MoCoModel(VectorEncoder(4, 3))
    data = torch.randn(8, 4)
    with pytest.raises(ValueError, match="guide_threshold=0.8 needs the guide"):
        MoCoTrainer(model, data, ObjectiveConfig(guide_threshold=0.8), QueueConfig(size=8),
                    TrainConfig(output_dir=str(tmp_path), batch_size=4, max_steps=1))
