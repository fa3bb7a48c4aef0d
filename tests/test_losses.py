"""The objective's maths (METHOD.md, "Tests that pin the maths"), against independent references.

The slow reference below is written from METHOD.md with explicit Python loops over anchors and queue slots, in
float64; the library works on (B, K) masks in float32. Every case is small (B=5, K=13, D=4) and seeded.
"""
import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from textmoco.config import ObjectiveConfig
from textmoco.losses import compute_loss_from_embeddings, info_nce
from textmoco.selection import select_hard_negatives

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------------- helpers
def unit(x):
    return F.normalize(x, dim=-1)


def make_case(B=5, K=13, D=4, seed=0, filled=None, dup_ids=True):
    """q, k (positives close to q), queue keys / ids / filled. Queue ids overlap with the anchors' ids; some
    queue keys are near-copies of anchors (candidates for the threshold guard); batch ids have a duplicate."""
    g = torch.Generator().manual_seed(seed)
    q = unit(torch.randn(B, D, generator=g))
    k = unit(q + 0.4 * torch.randn(B, D, generator=g))
    keys = unit(torch.randn(K, D, generator=g))
    keys[0] = unit(q[0] + 0.05 * torch.randn(D, generator=g))  # near-duplicate of anchor 0
    if K > 5:
        keys[5] = unit(q[2 % B] + 0.05 * torch.randn(D, generator=g))
    ids = torch.arange(10, 10 + B)
    if dup_ids and B >= 4:
        ids[3] = ids[1]  # the same sample twice in one batch
    qids = torch.arange(100, 100 + K)
    for slot, anchor in ((2, 0), (7, 1), (9, 4)):  # anchors seen again in the queue window
        if slot < K and anchor < B:
            qids[slot] = ids[anchor]
    if filled is None:
        filled = torch.ones(K, dtype=torch.bool)
    return q, k, (keys, qids, filled), ids


def ref_keep(anchor, anchor_id, queue, cfg, filter_active):
    """Kept slot indices for one anchor, by loops. Also returns the list of valid (unguarded, filled) slots."""
    keys, qids, filled = queue
    K = keys.shape[0]
    num_filled = int(filled.sum())
    sims = [float(torch.dot(anchor.double(), keys[n].double())) for n in range(K)]
    valid = []
    for n in range(K):
        if not bool(filled[n]):
            continue
        if cfg.id_guard and anchor_id is not None and int(qids[n]) == int(anchor_id):
            continue
        if filter_active and cfg.guard_threshold is not None and sims[n] > cfg.guard_threshold:
            continue
        valid.append(n)
    if not filter_active or cfg.selection == "none":
        return valid, valid
    if cfg.selection == "min_similarity":
        return [n for n in valid if sims[n] >= cfg.min_similarity], valid
    if cfg.selection == "top_k":
        k = min(cfg.top_k, num_filled)
    else:
        k = max(1, min(num_filled, math.ceil(cfg.top_fraction * num_filled)))
    ranked = sorted(valid, key=lambda n: -sims[n])
    return ranked[:k], valid


def ref_anchor_loss(anchor, positive, negatives, tau):
    """-log(e^{a.p/t} / (e^{a.p/t} + sum_n e^{a.n/t})), by a loop, float64, differentiable."""
    pos = torch.dot(anchor.double(), positive.double()) / tau
    denom = torch.exp(pos)
    for n in negatives:
        denom = denom + torch.exp(torch.dot(anchor.double(), n.double()) / tau)
    return torch.log(denom) - pos


def ref_loss(q, k, ids, queue, cfg, filter_active=True):
    """The whole objective (weighted dual mode) with loops. Returns (loss, per-anchor q2k list, k2q list)."""
    keys = queue[0]
    B = q.shape[0]
    l_q2k, l_k2q = [], []
    for i in range(B):
        kept, _ = ref_keep(q[i].detach(), None if ids is None else ids[i], queue, cfg, filter_active)
        l_q2k.append(ref_anchor_loss(q[i], k[i], [keys[n] for n in kept], cfg.temperature))
    loss = sum(l_q2k) / B
    if cfg.dual_weight > 0:
        for i in range(B):
            negs = []
            if cfg.key_negatives in ("batch+queue", "batch"):
                for j in range(B):
                    if j == i:
                        continue
                    if cfg.id_guard and ids is not None and int(ids[j]) == int(ids[i]):
                        continue
                    negs.append(q[j])
            if cfg.key_negatives in ("batch+queue", "queue"):
                kept, _ = ref_keep(k[i], None if ids is None else ids[i], queue, cfg, filter_active)
                negs += [keys[n] for n in kept]
            l_k2q.append(ref_anchor_loss(k[i], q[i], negs, cfg.temperature))
        loss = (1 - cfg.dual_weight) * loss + cfg.dual_weight * sum(l_k2q) / B
    return loss, l_q2k, l_k2q


def moco_reference(q, k, queue_keys, tau):
    """MoCo's reference InfoNCE: logits = [l_pos, l_neg] / T, labels 0, cross-entropy."""
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
    l_neg = torch.einsum("nc,kc->nk", q, queue_keys)
    logits = torch.cat([l_pos, l_neg], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def lib_loss(q, k, ids, queue, cfg, filter_active=True, **kw):
    return compute_loss_from_embeddings(q, k, ids, queue, cfg, filter_active, **kw).loss


def full_cfg(**kw):
    base = dict(temperature=0.2, dual_weight=0.5, key_negatives="batch+queue", selection="top_k", top_k=4,
                id_guard=True, guard_threshold=0.9)
    base.update(kw)
    return ObjectiveConfig(**base)


# ------------------------------------------------------------------------------------------------- equal logits
@pytest.mark.parametrize("K", [1, 7, 100])
@pytest.mark.parametrize("tau", [0.05, 0.2, 1.0])
def test_equal_logits_give_log_K_plus_1(K, tau):
    D = 6
    q = torch.zeros(3, D)
    q[:, 0] = 1.0
    k = torch.zeros(3, D)
    k[:, 1] = 1.0  # q.k = 0
    keys = torch.zeros(K, D)
    keys[:, 2] = 1.0  # q.n = 0 for every slot: all K+1 logits equal
    queue = (keys, torch.arange(K), torch.ones(K, dtype=torch.bool))
    loss = lib_loss(q, k, None, queue, ObjectiveConfig.moco(tau))
    assert loss.item() == pytest.approx(math.log(K + 1), rel=1e-6, abs=1e-7)
    # the same with non-zero equal logits (q = k = every slot)
    loss = lib_loss(q, q.clone(), None, (q[:1].expand(K, D).clone(),) + queue[1:], ObjectiveConfig.moco(tau))
    assert loss.item() == pytest.approx(math.log(K + 1), rel=1e-6)


def test_equal_logits_count_only_filled_slots():
    K, D, filled_n = 20, 4, 6
    q = unit(torch.ones(2, D))
    keys = q[:1].expand(K, D).clone()
    filled = torch.zeros(K, dtype=torch.bool)
    filled[3:3 + filled_n] = True
    loss = lib_loss(q, q.clone(), None, (keys, torch.arange(K), filled), ObjectiveConfig.moco(0.1))
    assert loss.item() == pytest.approx(math.log(filled_n + 1), rel=1e-6)


# ------------------------------------------------------------------------------------------------- MoCo identities
@pytest.mark.parametrize("tau", [0.05, 0.2, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_plain_moco_matches_reference(tau, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, keys = unit(torch.randn(8, 16, generator=g)), unit(torch.randn(8, 16, generator=g)), \
        unit(torch.randn(37, 16, generator=g))
    queue = (keys, torch.arange(37), torch.ones(37, dtype=torch.bool))
    q1 = q.clone().requires_grad_()
    q2 = q.clone().requires_grad_()
    out = lib_loss(q1, k, torch.arange(8), queue, ObjectiveConfig.moco(tau))
    ref = moco_reference(q2, k, keys, tau)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.backward()
    ref.backward()
    torch.testing.assert_close(q1.grad, q2.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_equal_K_without_guard_is_moco(seed):
    q, k, queue, ids = make_case(seed=seed)
    K = queue[0].shape[0]
    cfg = ObjectiveConfig(temperature=0.2, dual_weight=0.0, selection="top_k", top_k=K, id_guard=False,
                          guard_threshold=None)
    moco = ObjectiveConfig.moco(0.2)
    torch.testing.assert_close(lib_loss(q, k, ids, queue, cfg), lib_loss(q, k, ids, queue, moco), rtol=0, atol=1e-6)
    torch.testing.assert_close(lib_loss(q, k, ids, queue, cfg), moco_reference(q, k, queue[0], 0.2),
                               rtol=1e-5, atol=1e-5)
    # top_k larger than K is the same
    big = ObjectiveConfig(temperature=0.2, dual_weight=0.0, selection="top_k", top_k=10 * K, id_guard=False,
                          guard_threshold=None)
    torch.testing.assert_close(lib_loss(q, k, ids, queue, big), moco_reference(q, k, queue[0], 0.2),
                               rtol=1e-5, atol=1e-5)


def test_top_fraction_one_and_min_similarity_minus_one_are_moco():
    q, k, queue, ids = make_case(seed=3)
    ref = moco_reference(q, k, queue[0], 0.2)
    for cfg in (ObjectiveConfig(temperature=0.2, dual_weight=0.0, selection="top_fraction", top_fraction=1.0,
                                id_guard=False, guard_threshold=None),
                ObjectiveConfig(temperature=0.2, dual_weight=0.0, selection="min_similarity", min_similarity=-1.0,
                                id_guard=False, guard_threshold=None)):
        torch.testing.assert_close(lib_loss(q, k, ids, queue, cfg), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key_negatives", ["batch+queue", "queue", "batch"])
def test_dual_weight_zero_is_moco(key_negatives):
    q, k, queue, ids = make_case(seed=4)
    cfg = ObjectiveConfig(temperature=0.2, dual_weight=0.0, key_negatives=key_negatives, selection="none",
                          id_guard=False, guard_threshold=None)
    qa = q.clone().requires_grad_()
    qb = q.clone().requires_grad_()
    out = lib_loss(qa, k, ids, queue, cfg)
    ref = moco_reference(qb, k, queue[0], 0.2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.backward()
    ref.backward()
    torch.testing.assert_close(qa.grad, qb.grad, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------- filtered loss vs slow reference
CASES = [
    dict(selection="none", id_guard=False, guard_threshold=None, dual_weight=0.0),
    dict(selection="none", id_guard=True, guard_threshold=None, dual_weight=0.0),
    dict(selection="none", id_guard=True, guard_threshold=0.5),
    dict(selection="top_k", top_k=4, id_guard=False, guard_threshold=None, dual_weight=0.0),
    dict(selection="top_k", top_k=4),
    dict(selection="top_k", top_k=1, guard_threshold=0.3),
    dict(selection="top_k", top_k=6, key_negatives="queue"),
    dict(selection="top_k", top_k=6, key_negatives="batch"),
    dict(selection="top_k", top_k=3, dual_weight=1.0),
    dict(selection="top_k", top_k=3, dual_weight=0.3, id_guard=False),
    dict(selection="top_fraction", top_fraction=0.25),
    dict(selection="top_fraction", top_fraction=0.5, guard_threshold=None, key_negatives="queue"),
    dict(selection="top_fraction", top_fraction=0.01),  # ceil -> 1 slot
    dict(selection="min_similarity", min_similarity=0.0),
    dict(selection="min_similarity", min_similarity=-0.3, guard_threshold=0.6, key_negatives="batch"),
    dict(selection="min_similarity", min_similarity=0.5, id_guard=False, guard_threshold=None),
]


@pytest.mark.parametrize("filter_active", [True, False])
@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[",".join(f"{k}={v}" for k, v in c.items()) for c in CASES])
def test_filtered_loss_matches_loop_reference(case, partial, filter_active):
    K = 13
    filled = torch.ones(K, dtype=torch.bool)
    if partial:
        filled[[1, 4, 5, 8, 11, 12]] = False
    q, k, queue, ids = make_case(K=K, seed=5, filled=filled)
    cfg = full_cfg(**case)
    qa = q.clone().requires_grad_()
    qb = q.clone().requires_grad_()
    out = lib_loss(qa, k, ids, queue, cfg, filter_active)
    ref, _, _ = ref_loss(qb, k, ids, queue, cfg, filter_active)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    out.backward()
    ref.backward()
    torch.testing.assert_close(qa.grad, qb.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES[3:], ids=[str(i) for i in range(3, len(CASES))])
def test_selection_mask_matches_loop_reference(case):
    q, k, queue, ids = make_case(seed=6)
    cfg = full_cfg(**case)
    K = queue[0].shape[0]
    sims = q @ queue[0].t()
    sel = select_hard_negatives(sims, ids, queue[1], queue[2], cfg, True)
    mask = sel.dense_mask(K)
    for i in range(q.shape[0]):
        kept, _ = ref_keep(q[i], ids[i], queue, cfg, True)
        assert sorted(torch.nonzero(mask[i]).flatten().tolist()) == sorted(kept), f"anchor {i}"
    assert sel.kept(q.shape[0], K) == int(mask.sum())


def test_reference_cases_are_not_trivial():
    """The small case really exercises the guards and the selection (otherwise the comparisons prove little)."""
    q, k, queue, ids = make_case(seed=5)
    cfg = full_cfg(guard_threshold=0.9)
    kept_all = [ref_keep(q[i], ids[i], queue, full_cfg(selection="none", id_guard=False, guard_threshold=None),
                         True)[0] for i in range(5)]
    assert all(len(x) == 13 for x in kept_all)
    id_dropped = [13 - len(ref_keep(q[i], ids[i], queue, full_cfg(selection="none", guard_threshold=None), True)[0])
                  for i in range(5)]
    assert sum(id_dropped) >= 3
    thr_dropped = [13 - len(ref_keep(q[i], None, queue, full_cfg(selection="none", id_guard=False), True)[0])
                   for i in range(5)]
    assert sum(thr_dropped) >= 1
    assert ids[1] == ids[3]
    sel = [ref_keep(q[i], ids[i], queue, cfg, True)[0] for i in range(5)]
    assert all(len(s) == 4 for s in sel)


# ------------------------------------------------------------------------------------------------------ n_random
def kept_slots(sel, i, K):
    """Slots anchor i keeps, read from the selection's index/valid (not from dense_mask); asserts no slot twice."""
    if sel.index is None:
        return set(range(K)) if sel.valid is None else set(torch.nonzero(sel.valid[i]).flatten().tolist())
    idx = sel.index[i] if sel.valid is None else sel.index[i][sel.valid[i]]
    idx = idx.tolist()
    assert len(idx) == len(set(idx)), f"anchor {i} keeps a slot twice: {sorted(idx)}"
    return set(idx)


@pytest.mark.parametrize("n_random", [1, 3, 20])
@pytest.mark.parametrize("guard", [None, 0.5])
def test_n_random_counts_and_sources(n_random, guard):
    q, k, queue, ids = make_case(seed=7)
    K = queue[0].shape[0]
    cfg = full_cfg(top_k=3, n_random=n_random, guard_threshold=guard)
    sims = q @ queue[0].t()
    for seed in range(5):
        sel = select_hard_negatives(sims, ids, queue[1], queue[2], cfg, True,
                                    generator=torch.Generator().manual_seed(seed))
        for i in range(q.shape[0]):
            hard, valid = ref_keep(q[i], ids[i], queue, cfg, True)
            kept = kept_slots(sel, i, K)
            assert len(kept) == min(cfg.top_k + n_random, len(valid))
            assert set(hard) <= kept  # the hard ones are all there
            assert kept <= set(valid)  # random ones only from unguarded, filled slots


@pytest.mark.parametrize("n_random", [2, 20])
def test_n_random_loss_uses_the_selected_slots(n_random):
    """The loss with n_random equals the loop loss over the slots select_hard_negatives picks with the same RNG."""
    q, k, queue, ids = make_case(seed=27)
    K = queue[0].shape[0]
    cfg = full_cfg(top_k=3, n_random=n_random, dual_weight=0.0)
    torch.manual_seed(123)
    sel = select_hard_negatives(q @ queue[0].t(), ids, queue[1], queue[2], cfg, True)
    torch.manual_seed(123)
    qa, qb = q.clone().requires_grad_(), q.clone().requires_grad_()
    got = lib_loss(qa, k, ids, queue, cfg)
    ref = sum(ref_anchor_loss(qb[i], k[i], [queue[0][n] for n in sorted(kept_slots(sel, i, K))], cfg.temperature)
              for i in range(q.shape[0])) / q.shape[0]
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    got.backward()
    ref.backward()
    torch.testing.assert_close(qa.grad, qb.grad.float(), rtol=1e-4, atol=1e-5)


def test_dense_mask_agrees_with_index_when_n_random_exceeds_candidates():
    """n_random larger than the unselected valid slots pads the random block with invalid entries whose index
    points at arbitrary slots; dense_mask (scatter of valid into index) must not let such a padding entry
    overwrite a kept slot with False."""
    q, k, queue, ids = make_case(seed=7)
    K = queue[0].shape[0]
    cfg = full_cfg(top_k=3, n_random=20, guard_threshold=None)
    for seed in range(3):
        sel = select_hard_negatives(q @ queue[0].t(), ids, queue[1], queue[2], cfg, True,
                                    generator=torch.Generator().manual_seed(seed))
        mask = sel.dense_mask(K)
        for i in range(q.shape[0]):
            assert set(torch.nonzero(mask[i]).flatten().tolist()) == kept_slots(sel, i, K), f"anchor {i}"
        assert int(mask.sum()) == sel.kept(q.shape[0], K)


def test_n_random_is_random_and_generator_reproducible():
    q, k, queue, ids = make_case(seed=8, B=5, K=13)
    cfg = full_cfg(top_k=2, n_random=2, guard_threshold=None, id_guard=False)
    sims = q @ queue[0].t()

    def mask(seed):
        return select_hard_negatives(sims, ids, queue[1], queue[2], cfg, True,
                                     generator=torch.Generator().manual_seed(seed)).dense_mask(13)

    assert torch.equal(mask(0), mask(0))
    assert any(not torch.equal(mask(0), mask(s)) for s in range(1, 6))


def test_n_random_ignores_unfilled_slots():
    K = 13
    filled = torch.zeros(K, dtype=torch.bool)
    filled[[0, 3, 6, 9]] = True
    q, k, queue, ids = make_case(seed=9, filled=filled)
    cfg = full_cfg(top_k=2, n_random=10, guard_threshold=None, id_guard=False)
    sel = select_hard_negatives(q @ queue[0].t(), ids, queue[1], queue[2], cfg, True)
    for i in range(q.shape[0]):
        kept = kept_slots(sel, i, K)
        assert kept <= set(torch.nonzero(filled).flatten().tolist())
        assert len(kept) == 4


@pytest.mark.parametrize("selection,param", [("min_similarity", dict(min_similarity=0.3)),
                                             ("top_fraction", dict(top_fraction=0.2))])
def test_n_random_applies_to_every_selection_rule(selection, param):
    """METHOD.md: 'keep the hardest remaining slots by one rule — top_k, top_fraction, or min_similarity.
    Optionally add n_random random easy negatives'; config: 'n_random: random easy negatives added back per
    anchor (from the unselected, unguarded slots)' — for every rule, not only top_k."""
    q, k, queue, ids = make_case(seed=10)
    K = queue[0].shape[0]
    cfg = full_cfg(selection=selection, n_random=2, guard_threshold=None, id_guard=False, **param)
    sel = select_hard_negatives(q @ queue[0].t(), ids, queue[1], queue[2], cfg, True,
                                generator=torch.Generator().manual_seed(0))
    for i in range(q.shape[0]):
        hard, valid = ref_keep(q[i], ids[i], queue, cfg, True)
        kept = kept_slots(sel, i, K)
        assert set(hard) <= kept <= set(valid)
        assert len(kept) == min(len(hard) + 2, len(valid)), f"anchor {i}: {len(hard)} hard, {len(kept)} kept"


# ----------------------------------------------------------------------------------------------------- edge cases
def test_K_smaller_than_top_k():
    q, k, queue, ids = make_case(K=3, seed=11)
    cfg = full_cfg(top_k=512, dual_weight=0.0, id_guard=False, guard_threshold=None)
    torch.testing.assert_close(lib_loss(q, k, ids, queue, cfg), moco_reference(q, k, queue[0], 0.2),
                               rtol=1e-5, atol=1e-5)
    cfg = full_cfg(top_k=512)
    torch.testing.assert_close(lib_loss(q, k, ids, queue, cfg).double(), ref_loss(q, k, ids, queue, cfg)[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [ObjectiveConfig.moco(0.2), full_cfg(dual_weight=0.0),
                                 full_cfg(key_negatives="queue")], ids=["moco", "filtered", "dual-queue"])
def test_empty_queue_loss_zero_and_finite_gradient(cfg):
    K, D = 8, 4
    q, k, _, ids = make_case(K=K, D=D, seed=12)
    queue = (torch.zeros(K, D), torch.full((K,), -1), torch.zeros(K, dtype=torch.bool))
    qa = q.clone().requires_grad_()
    loss = lib_loss(qa, k, ids, queue, cfg)
    assert loss.item() == 0.0
    loss.backward()
    assert qa.grad is not None and torch.isfinite(qa.grad).all()
    assert torch.count_nonzero(qa.grad) == 0


def test_empty_queue_with_batch_negatives():
    """With the dual term on and batch negatives, an empty queue still leaves a key-anchored term."""
    K, D = 8, 4
    q, k, _, ids = make_case(K=K, D=D, seed=13)
    queue = (torch.zeros(K, D), torch.full((K,), -1), torch.zeros(K, dtype=torch.bool))
    cfg = full_cfg()
    qa, qb = q.clone().requires_grad_(), q.clone().requires_grad_()
    out = lib_loss(qa, k, ids, queue, cfg)
    ref, l_q2k, _ = ref_loss(qb, k, ids, queue, cfg)
    assert all(float(x.detach()) == 0.0 for x in l_q2k)
    assert out.item() > 0
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    out.backward()
    ref.backward()
    assert torch.isfinite(qa.grad).all()
    torch.testing.assert_close(qa.grad, qb.grad, rtol=1e-4, atol=1e-5)


def test_all_slots_guarded_by_id_gives_zero_for_that_anchor():
    K, D = 6, 4
    q, k, queue, _ = make_case(B=3, K=K, D=D, seed=14, dup_ids=False)
    ids = torch.tensor([7, 8, 9])
    keys = queue[0]
    qids = torch.full((K,), 7)  # every slot holds anchor 0's sample
    cfg = full_cfg(dual_weight=0.0, guard_threshold=None, top_k=3)
    qa = q.clone().requires_grad_()
    out = lib_loss(qa, k, ids, (keys, qids, queue[2]), cfg)
    ref, per_anchor, _ = ref_loss(q, k, ids, (keys, qids, queue[2]), cfg)
    assert float(per_anchor[0]) == 0.0 and float(per_anchor[1]) > 0
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    # anchor 0 alone: exactly zero, finite zero gradient
    q0 = q[:1].clone().requires_grad_()
    out0 = lib_loss(q0, k[:1], ids[:1], (keys, qids, queue[2]), cfg)
    assert out0.item() == 0.0
    out0.backward()
    assert torch.isfinite(q0.grad).all() and torch.count_nonzero(q0.grad) == 0


def test_all_slots_guarded_by_threshold():
    q, k, queue, ids = make_case(seed=15)
    cfg = full_cfg(dual_weight=0.0, guard_threshold=-0.999, id_guard=False)  # every slot is "too similar"
    qa = q.clone().requires_grad_()
    out = lib_loss(qa, k, ids, queue, cfg)
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(qa.grad).all()


@pytest.mark.parametrize("selection", ["top_k", "none", "top_fraction", "min_similarity"])
@pytest.mark.parametrize("filter_active", [True, False])
def test_unfilled_slots_never_used_even_if_hardest(selection, filter_active):
    B, K, D = 5, 13, 4
    q, k, queue, ids = make_case(B=B, K=K, D=D, seed=16)
    keys, qids, _ = queue
    filled = torch.zeros(K, dtype=torch.bool)
    filled[:7] = True
    keys = keys.clone()
    keys[7:] = q[torch.arange(7, K) % B]  # unfilled slots hold the hardest possible vectors (the anchors)
    cfg = full_cfg(selection=selection, dual_weight=0.0, id_guard=False, guard_threshold=None, top_k=3,
                   min_similarity=-0.2)
    got = lib_loss(q, k, ids, (keys, qids, filled), cfg, filter_active)
    sub = (keys[:7], qids[:7], torch.ones(7, dtype=torch.bool))
    expected = lib_loss(q, k, ids, sub, cfg, filter_active)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    ref, _, _ = ref_loss(q, k, ids, sub, cfg, filter_active)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    sel = select_hard_negatives(q @ keys.t(), ids, qids, filled, cfg, filter_active)
    assert not sel.dense_mask(K)[:, 7:].any()


def test_unfilled_slots_zero_vectors_not_negatives():
    """MoCo's reference queue starts as random/zero vectors that count as negatives; ours must not."""
    K, D = 10, 4
    q, k, _, ids = make_case(K=K, D=D, seed=17)
    keys = torch.zeros(K, D)
    keys[:2] = unit(torch.randn(2, D, generator=torch.Generator().manual_seed(1)))
    filled = torch.zeros(K, dtype=torch.bool)
    filled[:2] = True
    cfg = ObjectiveConfig.moco(0.2)
    torch.testing.assert_close(lib_loss(q, k, ids, (keys, torch.arange(K), filled), cfg),
                               moco_reference(q, k, keys[:2], 0.2), rtol=1e-5, atol=1e-5)


def test_filter_inactive_keeps_all_filled_except_id_guard():
    K = 13
    filled = torch.ones(K, dtype=torch.bool)
    filled[[3, 4]] = False
    q, k, queue, ids = make_case(K=K, seed=18, filled=filled)
    cfg = full_cfg(top_k=2, guard_threshold=0.1, n_random=1, selection="top_k")
    sel = select_hard_negatives(q @ queue[0].t(), ids, queue[1], filled, cfg, filter_active=False)
    mask = sel.dense_mask(K)
    expected = filled.unsqueeze(0) & (queue[1].unsqueeze(0) != ids.unsqueeze(1))
    assert torch.equal(mask, expected)
    # and with the filter on the threshold/selection bite (the switch matters)
    on = select_hard_negatives(q @ queue[0].t(), ids, queue[1], filled, cfg, filter_active=True).dense_mask(K)
    assert int(on.sum()) < int(mask.sum())


# ------------------------------------------------------------------------------------------------------- gradients
def test_dual_term_gives_query_gradient_from_both_terms():
    q, k, queue, ids = make_case(seed=19)
    grads = {}
    for lam in (0.0, 0.5, 1.0):
        qa = q.clone().requires_grad_()
        lib_loss(qa, k, ids, queue, full_cfg(dual_weight=lam)).backward()
        grads[lam] = qa.grad
    # q2k-only and k2q-only gradients from the loop reference
    qr = q.clone().requires_grad_()
    _, l_q2k, l_k2q = ref_loss(qr, k, ids, queue, full_cfg(dual_weight=0.5))
    g_q2k, = torch.autograd.grad(sum(l_q2k) / 5, qr, retain_graph=True)
    g_k2q, = torch.autograd.grad(sum(l_k2q) / 5, qr)
    assert g_k2q.abs().sum() > 1e-3 and g_q2k.abs().sum() > 1e-3
    torch.testing.assert_close(grads[0.0], g_q2k.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[1.0], g_k2q.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0.5], (0.5 * g_q2k + 0.5 * g_k2q).float(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(grads[0.0], grads[0.5], atol=1e-4)


@pytest.mark.parametrize("cfg", [full_cfg(), full_cfg(key_negatives="batch"), ObjectiveConfig.moco(0.2)],
                         ids=["full", "batch", "moco"])
def test_key_never_gets_gradient(cfg):
    q, k, queue, ids = make_case(seed=20)
    qa = q.clone().requires_grad_()
    ka = k.clone().requires_grad_()  # even a key that requires grad is treated as a constant
    out = lib_loss(qa, ka, ids, queue, cfg)
    out.backward()
    assert ka.grad is None
    assert qa.grad is not None
    # same value as with a plain (no-grad) key
    torch.testing.assert_close(out, lib_loss(q, k, ids, queue, cfg))


# ------------------------------------------------------------------------------------------------------- symmetric
@pytest.mark.parametrize("weight", [0.5, 0.75, 0.25])
def test_symmetric_mode_is_weighted_sum_of_swapped_moco(weight):
    """Symmetric mode = (1 - w) * MoCo(view a anchors) + w * MoCo(view b anchors); w = 0.5 is the plain average."""
    g = torch.Generator().manual_seed(22)
    B, D, K = 6, 8, 17
    q_a, q_b = unit(torch.randn(B, D, generator=g)), unit(torch.randn(B, D, generator=g))
    k_a, k_b = unit(q_a + 0.3 * torch.randn(B, D, generator=g)), unit(q_b + 0.3 * torch.randn(B, D, generator=g))
    keys = unit(torch.randn(K, D, generator=g))
    queue = (keys, torch.arange(100, 100 + K), torch.ones(K, dtype=torch.bool))
    cfg = ObjectiveConfig(temperature=0.2, dual_mode="symmetric", dual_weight=weight, selection="none",
                          id_guard=False, guard_threshold=None)
    qa1, qb1 = q_a.clone().requires_grad_(), q_b.clone().requires_grad_()
    out = compute_loss_from_embeddings(qa1, k_b, torch.arange(B), queue, cfg, q_b=qb1, k_a=k_a).loss
    qa2, qb2 = q_a.clone().requires_grad_(), q_b.clone().requires_grad_()
    ref = (1 - weight) * moco_reference(qa2, k_b, keys, 0.2) + weight * moco_reference(qb2, k_a, keys, 0.2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.backward()
    ref.backward()
    torch.testing.assert_close(qa1.grad, qa2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(qb1.grad, qb2.grad, rtol=1e-4, atol=1e-5)


def test_symmetric_mode_needs_swapped_pair():
    q, k, queue, ids = make_case(seed=23)
    cfg = ObjectiveConfig(temperature=0.2, dual_mode="symmetric", selection="none", id_guard=False,
                          guard_threshold=None)
    with pytest.raises(ValueError, match="symmetric"):
        compute_loss_from_embeddings(q, k, ids, queue, cfg)


@pytest.mark.parametrize("key_gradient", [False, True])
def test_compute_moco_loss_reads_the_model_output(key_gradient):
    """compute_moco_loss(MoCoOutput) on one process = compute_loss_from_embeddings with the output's tensors: view
    b's keys are k, or its query pass q_b under key_gradient; explicit negatives (k_neg) join the first term."""
    from textmoco.losses import compute_moco_loss
    from textmoco.model import MoCoOutput
    g = torch.Generator().manual_seed(31)
    B, D, K = 5, 8, 11
    q, q_b, k, k_a = (unit(torch.randn(B, D, generator=g)) for _ in range(4))
    k_neg = unit(torch.randn(B, 2, D, generator=g))
    queue = (unit(torch.randn(K, D, generator=g)), torch.arange(100, 100 + K), torch.ones(K, dtype=torch.bool))
    cfg = ObjectiveConfig(temperature=0.1, dual_mode="symmetric", key_gradient=key_gradient, selection="none")
    ids = torch.arange(B)
    got = compute_moco_loss(MoCoOutput(q, k, q_b, k_a, k_neg), ids, queue, cfg).loss
    key = q_b if key_gradient else k
    ref = compute_loss_from_embeddings(q, key, ids, queue, cfg, q_b=q_b, k_a=k_a, extra_key_negatives=k_neg).loss
    torch.testing.assert_close(got, ref)
    other = compute_loss_from_embeddings(q, k if key_gradient else q_b, ids, queue, cfg, q_b=q_b, k_a=k_a,
                                         extra_key_negatives=k_neg).loss
    assert not torch.allclose(got, other)  # the choice of key matters in this case
    no_neg = compute_moco_loss(MoCoOutput(q, k, q_b, k_a), ids, queue, cfg).loss
    assert not torch.allclose(got, no_neg)


# --------------------------------------------------------------------------------- global batch split (distributed)
@pytest.mark.parametrize("key_negatives", ["batch+queue", "batch"])
def test_split_batch_with_gathered_queries_equals_full_batch(key_negatives):
    """Two 'processes' each with half the batch, given the global q_all / ids_all and their offset, average to the
    one-process loss and gradient (what gather_with_grad + DDP's mean compute)."""
    B = 6
    q, k, queue, _ = make_case(B=B, seed=24)
    ids = torch.tensor([10, 11, 12, 11, 14, 10])  # duplicates across the two halves
    cfg = full_cfg(key_negatives=key_negatives)
    qf = q.clone().requires_grad_()
    full = lib_loss(qf, k, ids, queue, cfg)
    full.backward()
    qs = q.clone().requires_grad_()
    half = B // 2
    parts = [lib_loss(qs[r * half:(r + 1) * half], k[r * half:(r + 1) * half], ids[r * half:(r + 1) * half], queue,
                      cfg, q_all=qs, ids_all=ids, offset=r * half) for r in range(2)]
    split = 0.5 * (parts[0] + parts[1])
    split.backward()
    torch.testing.assert_close(split, full, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(qs.grad, qf.grad, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------- stats, dtypes
def test_stats_values():
    q, k, queue, ids = make_case(seed=25)
    cfg = full_cfg(dual_weight=0.0, guard_threshold=None, id_guard=False, top_k=4)
    out = compute_loss_from_embeddings(q, k, ids, queue, cfg)
    st = out.stats
    assert st["pos_cos"] == pytest.approx(float((q * k).sum(1).mean()), abs=1e-6)
    assert st["kept_fraction"] == pytest.approx(4 / 13, abs=1e-6)
    sims = q @ queue[0].t()
    top = torch.topk(sims, 4, dim=1).values
    assert st["neg_cos"] == pytest.approx(float(top.mean()), abs=1e-5)
    assert st["loss"] == pytest.approx(out.loss.item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_queue_storage(dtype):
    q, k, queue, ids = make_case(seed=26)
    cfg = full_cfg()
    half = (queue[0].to(dtype),) + queue[1:]
    rounded = (queue[0].to(dtype).float(),) + queue[1:]
    out = lib_loss(q, k, ids, half, cfg)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    torch.testing.assert_close(out, lib_loss(q, k, ids, rounded, cfg), rtol=1e-6, atol=1e-6)


def test_info_nce_masked_entries():
    pos = torch.tensor([0.5, 0.1])
    negs = [torch.tensor([[0.2, float("-inf"), 0.3], [float("-inf")] * 3])]
    got = info_nce(pos, negs, 0.5)
    e = math.exp
    expected0 = -math.log(e(1.0) / (e(1.0) + e(0.4) + e(0.6)))
    assert got[0].item() == pytest.approx(expected0, rel=1e-6)
    assert got[1].item() == 0.0


# ------------------------------------------------------------------------------------------------- no host reads
@contextlib.contextmanager
def no_host_reads():
    """Every way of reading a tensor's value on the host raises: a loss step that passes never stalls a GPU."""
    names = ["item", "tolist", "__float__", "__int__", "__bool__", "__index__"]
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def refuse(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"host read of a tensor value: Tensor.{name}")
        return method
    for n in names:
        setattr(torch.Tensor, n, refuse(n))
    try:
        yield
    finally:
        for n, method in saved.items():
            setattr(torch.Tensor, n, method)


@pytest.mark.parametrize("cfg_kw", [dict(), dict(selection="none"), dict(dual_weight=0.0),
                                    dict(dual_mode="symmetric"), dict(selection="min_similarity", min_similarity=0.0)])
def test_full_queue_step_reads_nothing_on_the_host(cfg_kw):
    """With a full queue (filled None, as NegativeQueue.negatives() returns it) and the id guard off, loss, backward
    and stats are pure device work; the stats are read once, afterwards, and equal the filled-mask version's."""
    q, k, queue, ids = make_case(seed=27)
    cfg = full_cfg(id_guard=False, **cfg_kw)
    q = q.clone().requires_grad_(True)
    full = (queue[0], queue[1], None)
    with no_host_reads():
        out = compute_loss_from_embeddings(q, k, ids, full, cfg, q_b=k.clone(), k_a=q.detach().clone())
        out.loss.backward()
    assert all(isinstance(v, torch.Tensor) for v in out.stat_tensors.values())
    masked = compute_loss_from_embeddings(q.detach(), k, ids, (queue[0], queue[1], torch.ones(len(queue[0]),
                                          dtype=torch.bool)), cfg, q_b=k.clone(), k_a=q.detach().clone())
    assert out.stats == pytest.approx(masked.stats, abs=1e-6)
    with pytest.raises(AssertionError, match="host read"), no_host_reads():  # the guard itself can fail
        float(out.loss)
