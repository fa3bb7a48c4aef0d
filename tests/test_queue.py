"""NegativeQueue: ring-buffer arithmetic against a plain Python list simulation, state, dtypes, NaN handling."""
import pytest
import torch
import torch.nn.functional as F

from textmoco.queue import NegativeQueue

torch.set_num_threads(1)


class ListQueue:
    """Reference: write each key, one by one, at ptr; ptr = (ptr + 1) % K."""

    def __init__(self, K):
        self.K, self.slots, self.ptr, self.count = K, [None] * K, 0, 0

    def enqueue(self, keys, ids):
        for key, i in zip(keys, ids):
            self.slots[self.ptr] = (key, int(i))
            self.ptr = (self.ptr + 1) % self.K
            self.count += 1


def assert_same(q: NegativeQueue, ref: ListQueue):
    assert q.ptr == ref.ptr
    assert q.num_enqueued == ref.count
    assert q.num_filled == min(ref.count, ref.K)
    assert q.is_full == (ref.count >= ref.K)
    for s in range(ref.K):
        if ref.slots[s] is None:
            assert not bool(q.filled[s]) and int(q.ids[s]) == -1
        else:
            key, i = ref.slots[s]
            assert bool(q.filled[s]) and int(q.ids[s]) == i, f"slot {s}"
            torch.testing.assert_close(q.keys[s], F.normalize(key, dim=0), rtol=0, atol=1e-7)


def batches(sizes, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    start = 0
    for b in sizes:
        yield torch.randn(b, D, generator=g), torch.arange(start, start + b)
        start += b


def test_wraparound_K_not_multiple_of_B():
    K, B = 10, 4
    q, ref = NegativeQueue(K, 3), ListQueue(K)
    expected_ptr = [4, 8, 2]
    for step, (keys, ids) in enumerate(batches([B, B, B])):
        q.enqueue(keys, ids)
        ref.enqueue(keys, ids)
        assert_same(q, ref)
        assert q.ptr == expected_ptr[step]
    # after 3 enqueues: slots 0,1 hold ids 8,9 (wrapped), slots 2..9 ids 2..9 ... explicitly:
    assert q.ids.tolist() == [10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    assert q.filled.all()


@pytest.mark.parametrize("K,sizes", [(7, [3, 3, 3, 3, 3]), (5, [2, 1, 4, 3]), (6, [6, 6, 1]), (4, [1] * 9),
                                     (9, [4, 4, 4, 1, 8])])
def test_wraparound_matches_list_simulation(K, sizes):
    q, ref = NegativeQueue(K, 3), ListQueue(K)
    for keys, ids in batches(sizes, seed=K):
        q.enqueue(keys, ids)
        ref.enqueue(keys, ids)
        assert_same(q, ref)


@pytest.mark.parametrize("K,sizes", [(4, [10]), (5, [2, 13]), (3, [7, 7, 1]), (6, [4, 6])])
def test_batch_bigger_than_K_keeps_newest(K, sizes):
    q, ref = NegativeQueue(K, 3), ListQueue(K)
    for keys, ids in batches(sizes, seed=1):
        q.enqueue(keys, ids)
        ref.enqueue(keys, ids)
        assert_same(q, ref)
    total = sum(sizes)
    assert sorted(q.ids.tolist()) == list(range(total - K, total))


def test_filled_mask_grows_then_saturates():
    q = NegativeQueue(10, 3)
    assert not q.filled.any() and q.num_filled == 0 and not q.is_full
    assert (q.ids == -1).all()
    for n, (keys, ids) in enumerate(batches([3, 3, 3, 3]), 1):
        q.enqueue(keys, ids)
        assert int(q.filled.sum()) == min(3 * n, 10) == q.num_filled
    assert q.is_full


def test_keys_renormalised_and_detached():
    q = NegativeQueue(6, 4)
    keys = (torch.randn(3, 4) * torch.tensor([[0.1], [5.0], [40.0]])).requires_grad_()
    q.enqueue(keys, torch.arange(3))
    torch.testing.assert_close(q.keys[:3].norm(dim=1), torch.ones(3))
    torch.testing.assert_close(q.keys[:3], F.normalize(keys.detach(), dim=1))
    assert not q.keys.requires_grad


def test_nonfinite_rows_dropped():
    q, ref = NegativeQueue(8, 3), ListQueue(8)
    keys = torch.randn(5, 3)
    keys[1, 0] = float("nan")
    keys[3, 2] = float("inf")
    ids = torch.arange(5)
    q.enqueue(keys, ids)
    good = torch.tensor([0, 2, 4])
    ref.enqueue(keys[good], ids[good])
    assert_same(q, ref)
    assert torch.isfinite(q.keys).all()
    assert q.ids[:3].tolist() == [0, 2, 4]
    # an all-NaN batch changes nothing
    before = q.state_dict()
    before = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in before.items()}
    q.enqueue(torch.full((4, 3), float("nan")), torch.arange(10, 14))
    assert q.ptr == before["ptr"] and q.num_enqueued == before["num_enqueued"]
    assert torch.equal(q.keys, before["keys"]) and torch.equal(q.ids, before["ids"])


def test_negatives_view():
    q = NegativeQueue(5, 2)
    keys, ids = torch.randn(2, 2), torch.tensor([4, 9])
    q.enqueue(keys, ids)
    k, i, f = q.negatives()
    assert k.shape == (5, 2) and i.tolist() == [4, 9, -1, -1, -1] and f.tolist() == [True, True, False, False, False]
    q.enqueue(torch.randn(3, 2), torch.tensor([1, 2, 3]))
    assert q.is_full and q.negatives()[2] is None  # full: the loss needs no mask (and no device read to count it)


def test_state_dict_round_trip():
    q = NegativeQueue(7, 3)
    for keys, ids in batches([3, 3, 3]):
        q.enqueue(keys, ids)
    state = q.state_dict()
    assert set(state) >= {"keys", "ids", "filled", "ptr", "num_enqueued"}
    r = NegativeQueue(7, 3)
    r.load_state_dict(state)
    assert torch.equal(r.keys, q.keys) and torch.equal(r.ids, q.ids) and torch.equal(r.filled, q.filled)
    assert (r.ptr, r.num_enqueued, r.num_filled, r.is_full) == (q.ptr, q.num_enqueued, q.num_filled, q.is_full)
    # both continue identically
    for keys, ids in batches([4, 2], seed=5):
        q.enqueue(keys, ids)
        r.enqueue(keys, ids)
    assert torch.equal(r.keys, q.keys) and torch.equal(r.ids, q.ids) and r.ptr == q.ptr


def test_loaded_queue_does_not_alias_the_source():
    """load_state_dict must copy (like nn.Module.load_state_dict): a restored queue and the queue it was taken
    from (or the state dict itself) must not share storage, or enqueueing into one silently rewrites the other."""
    q = NegativeQueue(6, 3)
    for keys, ids in batches([4]):
        q.enqueue(keys, ids)
    state = q.state_dict()
    r = NegativeQueue(6, 3)
    r.load_state_dict(state)
    snapshot = (r.keys.clone(), r.ids.clone(), r.filled.clone())
    for keys, ids in batches([4], seed=9):
        q.enqueue(keys, ids)
    assert torch.equal(r.keys, snapshot[0]) and torch.equal(r.ids, snapshot[1]) and torch.equal(r.filled, snapshot[2])


def test_load_state_dict_wrong_size_is_clear():
    q = NegativeQueue(7, 3)
    with pytest.raises(ValueError, match="queue_size"):
        q.load_state_dict(NegativeQueue(8, 3).state_dict())


@pytest.mark.parametrize("dtype,torch_dtype", [("float16", torch.float16), ("bfloat16", torch.bfloat16)])
def test_half_storage(dtype, torch_dtype):
    K, D = 16, 8
    full, half = NegativeQueue(K, D), NegativeQueue(K, D, dtype=dtype)
    assert full.memory_bytes == K * D * 4
    assert half.memory_bytes == K * D * 2 == full.memory_bytes // 2
    assert half.keys.dtype == torch_dtype
    keys, ids = torch.randn(5, D), torch.arange(5)
    half.enqueue(keys, ids)
    full.enqueue(keys, ids)
    torch.testing.assert_close(half.keys.float(), full.keys.to(torch_dtype).float(), rtol=0, atol=0)
    # state round trip keeps the storage dtype
    r = NegativeQueue(K, D, dtype=dtype)
    r.load_state_dict({**half.state_dict(), "keys": half.state_dict()["keys"].float()})
    assert r.keys.dtype == torch_dtype and torch.equal(r.keys, half.keys)


@pytest.mark.parametrize("size", [0, -5, 2.5])
def test_invalid_size(size):
    with pytest.raises(ValueError, match="queue_size") as e:
        NegativeQueue(size, 4)
    assert "> 0" in str(e.value)


@pytest.mark.parametrize("dtype", ["fp16", "float64", "int8"])
def test_invalid_dtype(dtype):
    with pytest.raises(ValueError, match="queue_dtype") as e:
        NegativeQueue(8, 4, dtype=dtype)
    assert "float16" in str(e.value) and "bfloat16" in str(e.value)
