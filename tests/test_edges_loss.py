"""The loss at the edges (issue 14): float32 inside a caller's autocast; the selection walked in blocks equals one
dense top-k; a half-precision queue gives the loss and gradient of its float32 upcast without keeping any K-sized
float32 tensor for backward; the id guard needs no device-to-host copy."""
import pytest
import torch
import torch.nn.functional as F

from textmoco import queue_logits
from textmoco import selection as selection_rules
from textmoco.config import ObjectiveConfig
from textmoco.losses import compute_loss_from_embeddings
from textmoco.selection import select_hard_negatives

torch.set_num_threads(1)


def case(B=6, K=1000, D=16, seed=0, dtype=torch.float32, repeat_ids=True):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, D, generator=g), dim=1)
    k = F.normalize(q + 0.3 * torch.randn(B, D, generator=g), dim=1)
    keys = F.normalize(torch.randn(K, D, generator=g), dim=1).to(dtype)
    ids = torch.arange(B) * 7
    queue_ids = torch.randint(0, 60, (K,), generator=g) if repeat_ids else torch.arange(K) + 10 ** 6
    return q, k, ids, (keys, queue_ids, None)


def cfg(**kw):
    base = dict(temperature=0.1, dual_weight=0.5, key_negatives="batch+queue", selection="top_k", top_k=20,
                id_guard=True, guard_threshold=0.6)
    base.update(kw)
    return ObjectiveConfig(**base)


def dense_reference_topk(sims, ids, queue_ids, c):
    """One torch.topk on the whole guarded (B, K) matrix: the selection without blocks."""
    scores = sims.clone()
    scores[scores > c.guard_threshold] = float("-inf")
    scores[ids.unsqueeze(1) == queue_ids.unsqueeze(0)] = float("-inf")
    values, index = torch.topk(scores, c.top_k, dim=1)
    return values, index


@pytest.mark.parametrize("chunk_bytes", [1, 4 * 6 * 300, 10 ** 9], ids=["256-slot-blocks", "300-slot", "one-block"])
def test_blocked_selection_equals_one_dense_topk(monkeypatch, chunk_bytes):
    monkeypatch.setattr(selection_rules, "SCORE_CHUNK_BYTES", chunk_bytes)
    q, k, ids, queue = case()
    c = cfg()
    sims = q @ queue[0].t()
    sel = select_hard_negatives(sims, ids, queue[1], None, c)
    ref_v, ref_i = dense_reference_topk(sims, ids, queue[1], c)
    for row in range(q.shape[0]):
        got = dict(zip(sel.index[row].tolist(), sel.values[row].tolist()))
        want = dict(zip(ref_i[row].tolist(), ref_v[row].tolist()))
        assert got == want, row
    assert torch.equal(sel.valid, sel.values > float("-inf"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("selection", ["top_k", "none", "min_similarity"])
def test_half_queue_equals_its_float32_upcast(monkeypatch, dtype, selection):
    """Same loss and gradient as a float32 queue holding the same (rounded) values; blocks and upcast chunks small
    so several of each are walked."""
    monkeypatch.setattr(selection_rules, "SCORE_CHUNK_BYTES", 1)
    monkeypatch.setattr(queue_logits, "UPCAST_CHUNK_BYTES", 1)
    q, k, ids, queue = case(dtype=dtype)
    c = cfg(selection=selection, min_similarity=0.1)
    upcast = (queue[0].float(), queue[1], None)
    qa, qb = q.clone().requires_grad_(), q.clone().requires_grad_()
    la = compute_loss_from_embeddings(qa, k, ids, queue, c).loss
    lb = compute_loss_from_embeddings(qb, k, ids, upcast, c).loss
    torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-6)
    la.backward()
    lb.backward()
    torch.testing.assert_close(qa.grad, qb.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("selection", ["top_k", "none"])
def test_half_queue_keeps_no_float32_copy_for_backward(selection):
    """Every tensor autograd saves is smaller than a (K, D) float32 copy of the queue (the 10-bytes-per-element
    bug kept one); the half queue itself may be saved (by reference, its own dtype)."""
    B, K, D = 4, 4096, 32
    q, k, ids, queue = case(B=B, K=K, D=D, dtype=torch.bfloat16, repeat_ids=False)
    saved = []

    def pack(t):
        saved.append((t.dtype, t.numel(), t.untyped_storage().data_ptr()))
        return t

    q = q.requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = compute_loss_from_embeddings(q, k, ids, queue, cfg(selection=selection)).loss
    loss.backward()
    queue_ptr = queue[0].untyped_storage().data_ptr()
    for dtype, numel, ptr in saved:
        if ptr == queue_ptr:
            assert dtype == torch.bfloat16
            continue
        assert not (dtype == torch.float32 and numel >= K * D), (dtype, numel)


def test_loss_is_float32_inside_a_callers_autocast():
    """Inside ``torch.autocast`` (bf16) the loss equals the one computed outside, in float32: the matmuls of the
    loss do not run in bf16 (they did: ``.float()`` alone does not stop autocast)."""
    q, k, ids, queue = case(K=300)
    c = cfg(key_negatives="batch+queue")
    ref = compute_loss_from_embeddings(q, k, ids, queue, c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = compute_loss_from_embeddings(q.bfloat16().float(), k, ids, queue, c)
        got_bf16_inputs = compute_loss_from_embeddings(q.bfloat16(), k.bfloat16(), ids, queue, c)
    assert got.loss.dtype == torch.float32 and got_bf16_inputs.loss.dtype == torch.float32
    ref_rounded = compute_loss_from_embeddings(q.bfloat16().float(), k, ids, queue, c)
    torch.testing.assert_close(got.loss, ref_rounded.loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ref.loss, ref_rounded.loss, rtol=5e-2, atol=5e-2)  # same ballpark


def test_id_guard_reads_nothing_on_the_host():
    """The id guard is a dense compare in blocks: no nonzero / item / bool (no device-to-host copy)."""
    from torch.overrides import TorchFunctionMode

    calls = []
    syncs = {torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.nonzero, torch.nonzero,
             torch.Tensor.__int__, torch.Tensor.__float__}

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in syncs:
                calls.append(func.__name__)
            return func(*args, **(kwargs or {}))

    q, k, ids, queue = case()
    qa = q.clone().requires_grad_()
    for selection in ("top_k", "top_fraction", "none", "min_similarity"):
        with Count():
            out = compute_loss_from_embeddings(qa, k, ids, queue, cfg(selection=selection))
            out.loss.backward()
        assert calls == [], (selection, calls)
