"""Momentum schedule (closed form) and the EMA update against a per-parameter loop reference."""
import copy
import math

import pytest
import torch
from torch import nn

from textmoco.model import MoCoModel
from textmoco.encoders.vector import VectorEncoder
from textmoco.momentum import ema_update, momentum_at

torch.set_num_threads(1)


@pytest.mark.parametrize("base", [0.99, 0.995, 0.9])
@pytest.mark.parametrize("T", [10, 1000, 7])
def test_cosine_schedule_closed_form(base, T):
    assert momentum_at(0, T, base) == pytest.approx(base, abs=1e-12)
    assert momentum_at(T, T, base) == pytest.approx(1.0, abs=1e-12)
    assert momentum_at(T / 2, T, base) == pytest.approx(1 - (1 - base) / 2, abs=1e-12)
    for t in range(T + 1):
        expected = 1 - (1 - base) * (math.cos(math.pi * t / T) + 1) / 2
        assert momentum_at(t, T, base) == pytest.approx(expected, abs=1e-12)
    values = [momentum_at(t, T, base) for t in range(T + 1)]
    assert all(a <= b for a, b in zip(values, values[1:]))  # monotone non-decreasing
    # clamped outside [0, T]
    assert momentum_at(T + 5, T, base) == pytest.approx(1.0)
    assert momentum_at(-3, T, base) == pytest.approx(base)


def test_cosine_schedule_explicit_name():
    assert momentum_at(5, 10, 0.99, "cosine") == pytest.approx(0.995)


@pytest.mark.parametrize("t", [0, 3, 50, 100])
def test_constant_schedule(t):
    assert momentum_at(t, 100, 0.995, "constant") == 0.995


def test_unknown_schedule():
    with pytest.raises(ValueError, match="momentum_schedule"):
        momentum_at(1, 10, 0.99, "linear")


class WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)  # float running stats + int64 num_batches_tracked
        self.register_buffer("scale", torch.tensor([1.5, -2.0]))
        self.register_buffer("counter", torch.tensor(3, dtype=torch.long))


def loop_reference(key: nn.Module, query: nn.Module, m: float):
    for pk, pq in zip(key.parameters(), query.parameters()):
        pk.data = m * pk.data + (1 - m) * pq.data
    for bk, bq in zip(key.buffers(), query.buffers()):
        if bk.is_floating_point():
            bk.data = m * bk.data + (1 - m) * bq.data
        else:
            bk.data = bq.data.clone()


@pytest.mark.parametrize("m", [0.0, 0.3, 0.99, 0.999, 1.0])
def test_ema_update_matches_loop(m):
    torch.manual_seed(0)
    query = WithBuffers()
    key = copy.deepcopy(query)
    with torch.no_grad():  # make query and key differ everywhere
        for p in query.parameters():
            p.add_(torch.randn_like(p))
        query.bn.running_mean.add_(torch.randn(3))
        query.bn.running_var.mul_(2.0)
        query.scale.mul_(3.0)
        query.bn.num_batches_tracked.fill_(17)
        query.counter.fill_(42)
    for p in key.parameters():
        p.requires_grad_(False)
    ref = copy.deepcopy(key)
    ema_update(key, query, m)
    loop_reference(ref, query, m)
    for (name, a), b in zip(key.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    assert int(key.bn.num_batches_tracked) == 17 and int(key.counter) == 42
    if m == 1.0:
        torch.testing.assert_close(key.lin.weight, ref.lin.weight)
    if 0 < m < 1:
        assert not torch.allclose(key.lin.weight, query.lin.weight)


def test_ema_update_repeated_converges_and_leaves_query_alone():
    torch.manual_seed(1)
    query, key = nn.Linear(3, 3), nn.Linear(3, 3)
    q_before = copy.deepcopy(query.state_dict())
    for _ in range(200):
        ema_update(key, query, 0.9)
    for name, v in query.state_dict().items():
        assert torch.equal(v, q_before[name])
    torch.testing.assert_close(key.weight, query.weight, rtol=0, atol=1e-6)


def test_ema_update_structure_mismatch():
    with pytest.raises(ValueError):
        ema_update(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)), 0.9)


def test_model_momentum_update():
    torch.manual_seed(2)
    model = MoCoModel(VectorEncoder(4, 3, hidden=5))
    assert not any(p.requires_grad for p in model.key.parameters())
    with torch.no_grad():
        for p in model.query.parameters():
            p.add_(1.0)
    ref = copy.deepcopy(model.key)
    model.momentum_update(0.75)
    loop_reference(ref, model.query, 0.75)
    for a, b in zip(model.key.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)
