"""The evaluation protocol: every evaluator is called with a model and returns named metrics, and
``run_metrics`` names a run's record the same way for STS, retrieval and the image probe."""
import pytest
import torch

from textmoco.evaluation.probe import ProbeEvaluator, evaluate_features, raw_pixel_baseline
from textmoco.evaluation.protocol import Evaluator, run_metrics
from textmoco.evaluation.retrieval import RetrievalEvaluator, bm25_retrieval, evaluate_retrieval
from textmoco.evaluation.sts_suite import STSSuiteEvaluator

CORPUS = {f"d{i}": t for i, t in enumerate([
    "the cat sat on the mat", "dogs bark at the mailman", "a recipe for apple pie",
    "stock markets fell sharply today", "the violin is a string instrument", "volcanoes erupt molten lava"])}
QUERIES = {"a": "cat mat", "b": "violin string", "c": "lava volcanoes"}
RELEVANT = {"a": {"d0"}, "b": {"d4"}, "c": {"d5"}}


class Named:
    name, primary_metric = "dev", "x"

    def __call__(self, model):
        return {"x": 1.0, "y": 2.0, "count": 7}

    def headline(self, scores):
        return {k: scores[k] for k in ("x", "y") if k in scores}


def test_run_metrics_names_baselines_before_and_after():
    ev = Named()
    got = run_metrics(ev, {"x": 1.0, "y": 2.0, "count": 7}, {"x": 0.5, "y": 0.25, "count": 7},
                      baselines={"bm25": {"x": 0.1, "count": 7}, "missing": None})
    assert got == {"bm25_dev_x": 0.1, "dev_x_before": 0.5, "dev_y_before": 0.25,
                   "dev_x": 1.0, "dev_y": 2.0, "dev_count": 7}
    ev.name = ""
    assert run_metrics(ev, {"x": 1.0}, None) == {"x": 1.0}


def test_every_evaluator_follows_the_protocol(tiny_bert):
    from textmoco.encoders.text import TextEncoder

    images, labels = torch.rand(40, 1, 8, 8), torch.arange(40) % 4
    evaluators = [STSSuiteEvaluator(None, stsb_split="dev", show_progress_bar=False),
                  RetrievalEvaluator(QUERIES, CORPUS, RELEVANT, name="test"), ProbeEvaluator((images, labels),
                                                                                            (images, labels), k=5)]
    for ev in evaluators:
        assert isinstance(ev, Evaluator)
    enc = TextEncoder(tiny_bert, max_length=16)
    for ev in evaluators[:2]:
        scores = ev(enc)
        assert ev.primary_metric in ev.headline(scores) and set(ev.headline(scores)) <= set(scores)
    sts = evaluators[0](enc)
    assert set(evaluators[0].headline(sts)) == {"stsb_dev", "sts_avg"} and "sts_tasks" in sts


def test_retrieval_evaluator_is_the_functions_it_wraps(tiny_bert):
    from textmoco.encoders.text import TextEncoder

    enc = TextEncoder(tiny_bert, max_length=16)
    ev = RetrievalEvaluator(QUERIES, CORPUS, RELEVANT, name="test")
    assert ev(enc) == pytest.approx(evaluate_retrieval(enc, QUERIES, CORPUS, RELEVANT))
    assert ev.bm25() == bm25_retrieval(QUERIES, CORPUS, RELEVANT)
    assert set(ev.headline(ev.bm25())) == {"ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100"}


def test_probe_evaluator_is_the_functions_it_wraps():
    class Flat:
        def encode(self, x, batch_size=256):
            return x.flatten(1) @ torch.ones(64, 3) + x.flatten(1)[:, :3]

    g = torch.Generator().manual_seed(0)
    x_tr, x_te = torch.rand(60, 1, 8, 8, generator=g), torch.rand(30, 1, 8, 8, generator=g)
    y_tr, y_te = torch.arange(60) % 3, torch.arange(30) % 3
    ev = ProbeEvaluator((x_tr, y_tr), (x_te, y_te), k=7)
    assert ev(Flat()) == evaluate_features(Flat(), (x_tr, y_tr), (x_te, y_te), k=7)
    assert set(ev(Flat(), probe=False)) == {"knn"}
    assert ev.raw_pixels() == raw_pixel_baseline(x_tr, y_tr, x_te, y_te, k=7)
    before = {**ev(Flat()), "raw_pixels": ev.raw_pixels()}
    record = run_metrics(ev, ev(Flat()), before, baselines={"raw_pixels": before["raw_pixels"]})
    assert set(record) == {"raw_pixels_linear_probe", "raw_pixels_knn", "linear_probe_before", "knn_before",
                           "linear_probe", "knn"}  # the vision recipe's names (and its model card's)
