"""A real 2-process CPU (gloo) run against a 1-process run with the double batch (METHOD.md: "Two processes with
batch b each give the same loss and queue as one process with batch 2b").

Accelerate's prepared data loader gives process p the batches p, p+2, ... of the batch-b sampler, so the global
batch of step i on 2 processes is samples [2bi, 2bi + 2b) of the same permutation — exactly the 1-process batch of
size 2b. The queue snapshots after every step pin that, as well as the rank order of the all-gathered keys.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("dist_worker.py")
REPO = WORKER.parent.parent
B = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra):
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    e.pop("ACCELERATE_USE_CPU", None)
    e.update(extra)
    return e


def torchrun(args, **extra_env):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(WORKER)] + args
    return subprocess.Popen(cmd, cwd=REPO, env=env(**extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def single(args):
    return subprocess.Popen([sys.executable, str(WORKER)] + args, cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def two_and_one(tmp, extra=()):
    """A 2-process run with batch B and a 1-process run with batch 2B of the worker, both at once."""
    # The two-process run is launched with ACCELERATE_USE_CPU=1: without it Accelerate does not recognise a CPU
    # torchrun job at all (see test_plain_torchrun_on_cpu_is_distributed). Both runs go at once to save time.
    extra = list(extra)
    two = torchrun(["--batch", str(B), "--out", str(tmp / "two.pt"), "--output-dir", str(tmp / "two")] + extra,
                   ACCELERATE_USE_CPU="1")
    one = single(["--batch", str(2 * B), "--out", str(tmp / "one.pt"), "--output-dir", str(tmp / "one")] + extra)
    finish(one)
    finish(two)
    load = lambda p: torch.load(p, weights_only=False)  # noqa: E731
    return load(tmp / "two.pt"), load(tmp / "one.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return two_and_one(tmp_path_factory.mktemp("dist"))


def test_two_processes_equal_one_process_with_double_batch(runs):
    assert_two_equal_one(*runs, ("loss_q2k", "loss_k2q", "pos_cos", "neg_cos", "kept_fraction"))


def test_symmetric_batch_negatives_two_processes_equal_one(tmp_path):
    """batch_negatives gathers both views' keys: view-b anchors must see the other processes' view-a keys."""
    two, one = two_and_one(tmp_path, ["--symmetric-batch-negatives"])
    assert_two_equal_one(two, one, ("loss_q2k", "loss_sym", "pos_cos", "neg_cos", "kept_fraction"))
    assert all(r["loss_sym"] > 0 for r in one["stats"])  # batch negatives from step 1 (empty queue at first)


def test_key_gradient_two_processes_equal_one(tmp_path):
    """key_gradient: view b's keys are gathered *with* gradient, which flows back to the process that owns each row
    (and key_encoder momentum_a reuses view b's query pass as its keys)."""
    two, one = two_and_one(tmp_path, ["--symmetric-batch-negatives", "--key-gradient"])
    assert_two_equal_one(two, one, ("loss_q2k", "loss_sym", "pos_cos", "neg_cos", "kept_fraction"))


def assert_two_equal_one(two, one, stat_keys):
    assert two["world"] == 2 and one["world"] == 1
    assert len(two["losses"]) == len(one["losses"]) == 10
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=0, atol=1e-5)
    for key in stat_keys:
        nan = lambda v: float("nan") if v is None else v  # noqa: E731  (null in strict-JSON metrics)
        torch.testing.assert_close(torch.tensor([nan(r[key]) for r in two["stats"]]),
                                   torch.tensor([nan(r[key]) for r in one["stats"]]), rtol=0, atol=1e-5,
                                   equal_nan=True, msg=key)
    # every step wrote the same global batch, in the same order, with the same keys
    assert len(two["snap_ids"]) == len(one["snap_ids"]) == 10
    for step, (a, b) in enumerate(zip(two["snap_ids"], one["snap_ids"]), 1):
        assert torch.equal(a, b), f"queue ids differ after step {step}"
    for a, b in zip(two["snap_keys"], one["snap_keys"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert torch.equal(two["queue_ids"], one["queue_ids"]) and two["queue_ptr"] == one["queue_ptr"]
    assert torch.equal(two["queue_filled"], one["queue_filled"])
    torch.testing.assert_close(two["queue_keys"], one["queue_keys"], rtol=0, atol=1e-5)
    for branch in ("query", "key"):
        for name in one[branch]:
            torch.testing.assert_close(two[branch][name], one[branch][name], rtol=0, atol=1e-5,
                                       msg=f"{branch}.{name}")


def test_runs_exercised_the_full_objective(runs):
    _, one = runs
    stats = one["stats"]
    assert all(r["loss_k2q"] > 0 for r in stats)  # the dual term with batch negatives is on from step 1
    assert any(r["kept_fraction"] < 0.5 for r in stats)  # top-k selection active once the queue is full
    # the queue (20 slots, 8 keys a step, 32 samples) wraps around and holds a sample twice across an epoch
    # boundary, so the id guard has work to do
    ids = torch.stack(one["snap_ids"])
    assert ids.shape == (10, 20) and (ids[-1] >= 0).all()
    assert any(len(set(s.tolist())) < 20 for s in ids[2:])
    # parameters moved (otherwise equal parameters would prove nothing)
    assert any(r["lr"] > 0 for r in stats)


def test_plain_torchrun_on_cpu_is_distributed(tmp_path):
    """`torchrun --nproc_per_node 2 train.py` on a CPU-only machine must give a 2-process job. Accelerate only
    treats a CPU torchrun job as distributed with cpu=True / ACCELERATE_USE_CPU=1; otherwise every process trains
    alone as 'the main process' and all of them write the same checkpoint directory."""
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    proc = torchrun(["--batch", str(B), "--out", str(tmp_path / "world"), "--output-dir", str(tmp_path / "run"),
                     "--check-only"])
    finish(proc)
    seen = sorted((tmp_path / f"world.{r}").read_text().split() for r in (0, 1))
    assert seen == [["2", "0"], ["2", "1"]], f"(num_processes, process_index) per rank: {seen}"


def test_batchnorm_head_two_processes_equal_one_process(tmp_path):
    """A BatchNorm projection head (vision's MoCo v2/v3 head) normalises with the global batch's statistics under
    several processes (GatheredBatchNorm1d, on gloo too), in the query and the key branch: 2 x b equals 1 x 2b in
    losses, queue, weights and running statistics. Per-process statistics (--no-sync-bn) do not."""
    two, one = two_and_one(tmp_path, ["--head-bn", "--steps", "6"])
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=0, atol=1e-5)
    torch.testing.assert_close(two["queue_keys"], one["queue_keys"], rtol=0, atol=1e-5)
    # The encoder's last bias shifts every sample's features alike, which the head's BatchNorm removes: its gradient
    # is zero up to rounding in both runs, and AdamW turns rounding noise into +-lr steps, so that bias (and the
    # running mean it shifts) is free to differ. Everything else must match, and so must both branches' outputs.
    free = ("encoder.net.2.bias", "running_mean")
    for branch in ("query", "key"):
        assert any("running_var" in name for name in one[branch])
        for name in one[branch]:
            if not name.endswith(free):
                torch.testing.assert_close(two[branch][name], one[branch][name], rtol=0, atol=1e-5,
                                           msg=f"{branch}.{name}")
        torch.testing.assert_close(two[f"{branch}_out"], one[f"{branch}_out"], rtol=0, atol=1e-5)
    unsynced = torchrun(["--batch", str(B), "--out", str(tmp_path / "unsynced.pt"), "--output-dir",
                         str(tmp_path / "unsynced"), "--head-bn", "--steps", "6", "--no-sync-bn"],
                        ACCELERATE_USE_CPU="1")
    finish(unsynced)
    loose = torch.load(tmp_path / "unsynced.pt", weights_only=False)
    assert (torch.tensor(loose["losses"]) - torch.tensor(one["losses"])).abs().max() > 1e-3


def test_convert_sync_batchnorm_keeps_state_and_is_plain_batchnorm_on_one_process():
    from torch import nn

    from textmoco.distributed import GatheredBatchNorm1d, convert_sync_batchnorm

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Sequential(nn.ReLU(), nn.BatchNorm1d(5)))
    net[1].running_mean.fill_(0.3)
    reference = __import__("copy").deepcopy(net)
    convert_sync_batchnorm(net)
    assert type(net[1]) is GatheredBatchNorm1d and type(net[2][1]) is GatheredBatchNorm1d
    assert torch.equal(net[1].running_mean, reference[1].running_mean)
    x = torch.randn(8, 4)
    torch.testing.assert_close(net(x), reference(x), rtol=0, atol=0)
    torch.testing.assert_close(net[2][1].running_var, reference[2][1].running_var, rtol=0, atol=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="BatchNorm2d"):
            convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))
