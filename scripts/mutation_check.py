"""Mutation check of issue 14's edge cases: each named fault is applied alone to a copy of the repository, the
edge tests run there, and a markdown row says which tests failed (a mutation that no test catches reads "passed").

    python scripts/mutation_check.py [NAME ...]      (default: the unmutated baseline, then every mutation)
"""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

SRC = pathlib.Path(__file__).resolve().parents[1]
EMA_CALL = "            if self._ema is not None:\n                self._ema(m)"
STEP_START = "                if acc.sync_gradients:\n                    window.ok,"
# name -> [(file, text that must occur exactly once, its replacement)]
MUTATIONS = {
    "ema_from_pre_step_weights": [
        ("textmoco/momentum_contrast.py", EMA_CALL, "            if self._ema is not None:\n                pass"),
        ("textmoco/trainer.py", STEP_START, "                if acc.sync_gradients:\n"
         "                    self.moco._ema(self.moco.momentum_at(self.state['step'], self.total_steps))\n"
         "                    window.ok,")],
    "queries_enqueued": [("textmoco/trainer.py", "return result, out.k.detach(), ids",
                          "return result, out.q.detach(), ids")],
    "skipped_step_keys_enqueued": [
        ("textmoco/momentum_contrast.py", "        self.step = step + 1\n",
         "        if not ok and keys is not None and keys.numel():\n"
         "            self.queue.enqueue(keys, ids, gather=gather)\n        self.step = step + 1\n")],
    "filter_warmup_ignored": [("textmoco/momentum_contrast.py", "return step >= self.filter_warmup_steps",
                               "return True")],
    "scaler_skip_counted_as_taken": [("textmoco/finite_steps.py", "return finite and not scaler_skip, scaler_skip",
                                      "return finite, scaler_skip")],
    "nonfinite_gradient_not_detected": [
        ("textmoco/finite_steps.py", '    scaler = getattr(accelerator, "scaler", None) is not None',
         '    finite = True\n    scaler = getattr(accelerator, "scaler", None) is not None')],
    "loss_under_callers_autocast": [("textmoco/losses.py", "with torch.autocast(q.device.type, enabled=False):",
                                     "if True:")],
}
TESTS = ["tests/test_edges_step.py", "tests/test_edges_loss.py", "tests/test_trainer.py", "tests/test_momentum.py",
         "tests/test_queue.py"]


def run(name: str) -> str:
    dst = pathlib.Path(tempfile.mkdtemp(prefix=f"textmoco-mutant-{name}-")) / "repo"
    try:
        shutil.copytree(SRC, dst, ignore=shutil.ignore_patterns(".git", "runs", "outputs", "__pycache__",
                                                                "*.egg-info"))
        for rel, old, new in MUTATIONS.get(name, []):
            path = dst / rel
            text = path.read_text()
            if text.count(old) != 1:
                return f"| {name} | - | mutation does not apply to {rel} (the code moved: update this script) |"
            path.write_text(text.replace(old, new))
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=dst,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(dst)})
        failed = [line.split("::")[-1].split(" ")[0] for line in r.stdout.splitlines() if line.startswith("FAILED")]
        return f"| {name} | {r.returncode} | {', '.join(failed) or r.stdout.strip().splitlines()[-1]} |"
    finally:
        shutil.rmtree(dst.parent, ignore_errors=True)


if __name__ == "__main__":
    print("| mutation | pytest exit code | failing tests |\n|---|---|---|")
    for mutation in sys.argv[1:] or ["baseline", *MUTATIONS]:
        print(run(mutation), flush=True)
