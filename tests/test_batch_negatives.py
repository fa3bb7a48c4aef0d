"""``batch_negatives``: the global batch's other keys join the query-anchored terms' negatives. Checked against a
per-anchor loop over explicit logit lists (queue slots, batch keys, the id and guide guards), and in the symmetric
mode the view-b anchors must see the other *view-a* keys (for pairs: the other anchors)."""
import math

import pytest
import torch
import torch.nn.functional as F

from textmoco.config import ObjectiveConfig
from textmoco.losses import Guide, compute_loss_from_embeddings

B, K, D, TAU = 6, 9, 5, 0.1


def unit(*shape, g):
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def case(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([0, 1, 2, 2, 3, 4])  # rows 2 and 3 share an id: never each other's negatives
    queue_ids = torch.tensor([5, 0, 6, 2, 7, 8, 9, 4, 10])
    return dict(q=unit(B, D, g=g), k=unit(B, D, g=g), q_b=unit(B, D, g=g), k_a=unit(B, D, g=g), ids=ids,
                queue=(unit(K, D, g=g), queue_ids, None))


def ref_term(anchors, positives, batch_keys, ids, queue, guide_pairs=None, guide_threshold=None):
    """Mean over anchors of -log softmax at the positive of [a.p, a.queue slots (other ids), a.batch keys
    (other rows, other ids, guide cosine <= threshold)] / tau."""
    keys, queue_ids, _ = queue
    losses = []
    for i in range(anchors.shape[0]):
        logits = [anchors[i] @ positives[i]]
        logits += [anchors[i] @ keys[j] for j in range(keys.shape[0]) if queue_ids[j] != ids[i]]
        for j in range(batch_keys.shape[0]):
            if j == i or ids[j] == ids[i]:
                continue
            if guide_pairs is not None and guide_pairs[0][i] @ guide_pairs[1][j] > guide_threshold:
                continue
            logits.append(anchors[i] @ batch_keys[j])
        logits = torch.stack(logits) / TAU
        losses.append(-(logits[0] - torch.logsumexp(logits, 0)))
    return torch.stack(losses).mean()


def cfg(**kw):
    base = dict(temperature=TAU, dual_weight=0.0, selection="none", guard_threshold=None, id_guard=True,
                batch_negatives=True)
    base.update(kw)
    return ObjectiveConfig(**base)


@pytest.mark.parametrize("seed", [0, 1])
def test_moco_with_batch_negatives_matches_loop(seed):
    c = case(seed)
    got = compute_loss_from_embeddings(c["q"], c["k"], c["ids"], c["queue"], cfg()).loss
    want = ref_term(c["q"], c["k"], c["k"], c["ids"], c["queue"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    without = compute_loss_from_embeddings(c["q"], c["k"], c["ids"], c["queue"], cfg(batch_negatives=False)).loss
    assert without < got - 1e-3  # more negatives, larger loss: the option does something


def test_symmetric_view_b_anchors_get_the_other_view_a_keys():
    c = case(2)
    objective = cfg(dual_mode="symmetric", dual_weight=0.5)
    got = compute_loss_from_embeddings(c["q"], c["k"], c["ids"], c["queue"], objective, q_b=c["q_b"], k_a=c["k_a"])
    q2k = ref_term(c["q"], c["k"], c["k"], c["ids"], c["queue"])
    sym = ref_term(c["q_b"], c["k_a"], c["k_a"], c["ids"], c["queue"])
    torch.testing.assert_close(got.loss, 0.5 * (q2k + sym), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.stat_tensors["loss_sym"], sym, rtol=1e-5, atol=1e-6)
    wrong = ref_term(c["q_b"], c["k_a"], c["k"], c["ids"], c["queue"])  # view-b keys as the sym term's batch
    assert not math.isclose(float(wrong), float(sym), rel_tol=1e-4)


def test_gathered_keys_and_offset_pick_the_own_row():
    """A process holding rows 3..5 of a global batch of 6: its anchors skip their own global row and same-id rows."""
    c = case(3)
    local = slice(3, 6)
    got = compute_loss_from_embeddings(c["q"][local], c["k"][local], c["ids"][local], c["queue"], cfg(),
                                       ids_all=c["ids"], offset=3, k_all=c["k"]).loss
    keys, queue_ids, _ = c["queue"]
    losses = []
    for i in range(3, 6):
        logits = [c["q"][i] @ c["k"][i]] + [c["q"][i] @ keys[j] for j in range(K) if queue_ids[j] != c["ids"][i]]
        logits += [c["q"][i] @ c["k"][j] for j in range(B) if j != i and c["ids"][j] != c["ids"][i]]
        logits = torch.stack(logits) / TAU
        losses.append(-(logits[0] - torch.logsumexp(logits, 0)))
    torch.testing.assert_close(got, torch.stack(losses).mean(), rtol=1e-5, atol=1e-6)


def test_guide_drops_batch_keys_the_start_model_finds_too_similar():
    c = case(4)
    g = torch.Generator().manual_seed(9)
    guide = Guide(unit(11, 3, g=g), unit(11, 3, g=g))  # by sample id 0..10 (batch and queue)
    guide.key[4] = guide.anchor[0]  # id 0's anchor vs id 4's key: cosine 1 -> dropped
    got = compute_loss_from_embeddings(c["q"], c["k"], c["ids"], c["queue"], cfg(guide_threshold=0.8),
                                       guide=guide).loss
    keys, queue_ids, _ = c["queue"]
    # the guide also filters queue slots (by the slots' ids); the reference applies it to both
    slot_ok = [[queue_ids[j] != c["ids"][i] and float(guide.anchor[c["ids"][i]] @ guide.key[queue_ids[j]]) <= 0.8
                for j in range(K)] for i in range(B)]
    losses = []
    for i in range(B):
        logits = [c["q"][i] @ c["k"][i]] + [c["q"][i] @ keys[j] for j in range(K) if slot_ok[i][j]]
        logits += [c["q"][i] @ c["k"][j] for j in range(B) if j != i and c["ids"][j] != c["ids"][i]
                   and float(guide.anchor[c["ids"][i]] @ guide.key[c["ids"][j]]) <= 0.8]
        logits = torch.stack(logits) / TAU
        losses.append(-(logits[0] - torch.logsumexp(logits, 0)))
    torch.testing.assert_close(got, torch.stack(losses).mean(), rtol=1e-5, atol=1e-6)
    assert float(guide.anchor[0] @ guide.key[4]) > 0.99  # the case has a pair to drop



def _q_b_gradients(key_gradient):
    """(textmoco's, the loop reference's) gradient of the symmetric loss with batch negatives w.r.t. view b's
    query pass, which with key_gradient also stands for view b's keys."""
    c = case(5)
    q, q_b = c["q"].clone().requires_grad_(), c["q_b"].clone().requires_grad_()
    got = compute_loss_from_embeddings(q, q_b, c["ids"], c["queue"], cfg(dual_mode="symmetric", dual_weight=0.5,
                                                                          key_gradient=key_gradient),
                                       q_b=q_b, k_a=c["k_a"]).loss
    q_ref, qb_ref = c["q"].clone().requires_grad_(), c["q_b"].clone().requires_grad_()
    keys = qb_ref if key_gradient else qb_ref.detach()
    want = 0.5 * (ref_term(q_ref, keys, keys, c["ids"], c["queue"])
                  + ref_term(qb_ref, c["k_a"], c["k_a"], c["ids"], c["queue"]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (got + want).backward()
    torch.testing.assert_close(q.grad, q_ref.grad, rtol=1e-4, atol=1e-6)
    return q_b.grad, qb_ref.grad


def test_key_gradient_reaches_view_b_through_the_view_a_term():
    """key_gradient: view b's keys are its query pass, and the view-a term's positive and batch keys pass their
    gradient back to it (MNRL's two-sided gradient); without it they are constants there. Each checked against the
    loop reference differentiated by autograd; the loss value is the same either way."""
    with_grad, ref_with = _q_b_gradients(True)
    without, ref_without = _q_b_gradients(False)
    torch.testing.assert_close(with_grad, ref_with, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(without, ref_without, rtol=1e-4, atol=1e-6)
    assert (with_grad - without).abs().max() > 1e-3  # the view-a term's share of view b's gradient


def test_key_gradient_needs_keys_from_the_query_pass():
    from textmoco.config import TrainConfig, check_together
    objective = cfg(dual_mode="symmetric", dual_weight=0.5, key_gradient=True)
    check_together(objective, TrainConfig(key_encoder="momentum_a"))
    check_together(objective, TrainConfig(key_encoder="query"))
    with pytest.raises(ValueError, match="key_gradient.*key_encoder='momentum'"):
        check_together(objective, TrainConfig(key_encoder="momentum"))
    with pytest.raises(ValueError, match="dual_mode='weighted'"):
        check_together(cfg(key_gradient=True), TrainConfig(key_encoder="query"))
