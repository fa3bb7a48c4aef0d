"""End-to-end: the vision recipe on the offline digits data with a tiny ViT, export, reload, evaluate alone."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vision") / "run"
    cmd = [sys.executable, str(ROOT / "recipes/train_vision.py"), "--dataset", "digits", "--max_steps", "3",
           "--batch_size", "32", "--queue_size", "48", "--hidden_size", "32", "--num_layers", "1", "--heads", "2",
           "--head_hidden", "32", "--head_dim", "16", "--knn_every", "2", "--progress", "false",
           "--output_dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_results_and_artefacts(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    m = results["metrics"]
    for key in ("linear_probe", "knn", "linear_probe_before", "knn_before", "raw_pixels_linear_probe"):
        assert 0.0 <= m[key] <= 1.0, key
    assert results["steps"] == 3
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and "knn" in rows[1]  # kNN monitor at step 2
    assert (run_dir / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (run_dir / "README.md").read_text()
    assert "2501.16360" in card and "linear_probe" in card
    header = yaml.safe_load(card.split("---")[1])  # huggingface_hub metadata: model-index, no local path
    metrics = {m["name"]: m["value"] for r in header["model-index"][0]["results"] for m in r["metrics"]}
    assert metrics == {"linear probe top-1": m["linear_probe"], "knn top-1": m["knn"]}
    assert "base_model" not in header and str(run_dir) not in card.split("```python")[0]
    assert "AutoImageProcessor.from_pretrained" in card and "last_hidden_state[:, 1:].mean(dim=1)" in card
    # the final checkpoint (optimizer state) is gone after the export; --save_final_checkpoint true keeps it
    assert not (run_dir / "checkpoints" / "step-3").exists()


def test_export_loads_with_automodel_without_warnings(run_dir):
    import io
    import logging

    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = hf_logging.get_logger("transformers")
    logger.addHandler(handler)
    try:
        AutoModel.from_pretrained(str(run_dir))
    finally:
        logger.removeHandler(handler)
    assert "pooler" not in stream.getvalue() and "MISSING" not in stream.getvalue(), stream.getvalue()


def test_export_reloads_with_automodel_and_gives_the_trained_features(run_dir):
    from transformers import AutoModel

    from textmoco.data.images import load_digits_split
    from textmoco.encoders.vision import VisionEncoder
    from textmoco.evaluation.probe import evaluate_features

    backbone = AutoModel.from_pretrained(str(run_dir))
    assert backbone.config.hidden_size == 32
    encoder = VisionEncoder.from_pretrained(str(run_dir), views="none")
    x_tr, y_tr, x_te, y_te = load_digits_split(seed=0)
    again = evaluate_features(encoder, (x_tr, y_tr), (x_te, y_te))
    results = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert again["knn"] == pytest.approx(results["knn"], abs=1e-4)  # results.json: 4 decimals
    assert again["linear_probe"] == pytest.approx(results["linear_probe"], abs=1e-4)


def test_eval_linear_probe_recipe_alone(run_dir):
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/eval_linear_probe.py"), "--model", str(run_dir),
                           "--dataset", "digits"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    results = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert out["knn"] == pytest.approx(results["knn"], abs=1e-6)


def test_missing_model_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/eval_linear_probe.py"), "--model",
                           str(tmp_path / "nothing"), "--dataset", "digits"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "nothing" in proc.stderr
    assert "Traceback" not in proc.stderr
