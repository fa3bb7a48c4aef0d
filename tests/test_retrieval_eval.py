"""Retrieval evaluation glue: the evaluator's metrics on a hand-computed ranking, BM25 through the same metric code,
a TextEncoder evaluated like its exported model, and the wiki-vital split/task construction."""
import math

import pytest
import torch

from textmoco.data.wiki_vital import corpus_text, retrieval_splits, retrieval_task
from textmoco.evaluation.retrieval import (bm25_retrieval, evaluate_retrieval, make_evaluator,
                                           ranked_lists_to_scores)

CORPUS = {f"d{i}": t for i, t in enumerate([
    "the cat sat on the mat", "dogs bark at the mailman", "a recipe for apple pie",
    "stock markets fell sharply today", "the violin is a string instrument", "volcanoes erupt molten lava"])}


def test_metrics_on_a_hand_computed_ranking():
    queries = {"q1": "x", "q2": "y"}
    relevant = {"q1": {"d1"}, "q2": {"d0", "d2"}}
    ev = make_evaluator(queries, CORPUS, relevant)
    # q1: relevant at rank 2; q2: relevant at ranks 1 and 3
    ranked = [[("d0", .9), ("d1", .8), ("d2", .7)], [("d0", .9), ("d3", .8), ("d2", .7)]]
    got = ranked_lists_to_scores(ranked, ev)
    ndcg_q1 = (1 / math.log2(3)) / 1.0
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert got["ndcg@10"] == pytest.approx(100 * (ndcg_q1 + ndcg_q2) / 2, abs=0.01)
    assert got["mrr@10"] == pytest.approx(100 * (0.5 + 1.0) / 2, abs=0.01)
    assert got["recall@1"] == pytest.approx(100 * (0 + 0.5) / 2, abs=0.01)
    assert got["recall@10"] == pytest.approx(100.0) and got["num_queries"] == 2


def test_bm25_finds_lexical_matches():
    queries = {"a": "cat mat", "b": "violin string", "c": "lava volcanoes"}
    relevant = {"a": {"d0"}, "b": {"d4"}, "c": {"d5"}}
    got = bm25_retrieval(queries, CORPUS, relevant)
    assert got["ndcg@10"] == 100.0 and got["recall@1"] == 100.0


def test_bad_judgments_are_clear_errors():
    with pytest.raises(ValueError, match="not in the corpus"):
        make_evaluator({"a": "x"}, CORPUS, {"a": {"nope"}})


def test_text_encoder_is_scored_like_its_own_cosine_ranking(tiny_bert):
    from textmoco.encoders.text import TextEncoder

    enc = TextEncoder(tiny_bert, max_length=16)
    queries = {"a": "cat mat", "b": "violin string", "c": "lava volcanoes"}
    relevant = {"a": {"d0"}, "b": {"d4"}, "c": {"d5"}}
    ev = make_evaluator(queries, CORPUS, relevant)
    got = evaluate_retrieval(enc, queries, CORPUS, relevant, evaluator=ev)
    q = torch.nn.functional.normalize(enc.encode(list(queries.values())), dim=-1)
    d = torch.nn.functional.normalize(enc.encode(list(CORPUS.values())), dim=-1)
    sims = q @ d.t()
    ids = list(CORPUS)
    ranked = [[(ids[j], float(row[j])) for j in row.argsort(descending=True)] for row in sims]
    assert got == pytest.approx(ranked_lists_to_scores(ranked, ev), abs=0.01)
    assert enc.training  # mode restored


def test_wiki_vital_splits_and_task():
    arts = [{"title": f"T{i}", "description": "same" if i in (0, 3) else ("" if i == 7 else f"d{i}"),
             "extract": f"text {i}"} for i in range(20)]
    sp = retrieval_splits(arts, dev_every=4)
    assert sp["test"] == [0, 5, 10, 15]
    assert not set(sp["test"]) & (set(sp["dev"]) | set(sp["train"]))
    assert sorted(sp["test"] + sp["dev"] + sp["train"]) == list(range(20))
    q, c, r = retrieval_task(arts, sp["test"])
    assert len(c) == 20 and c["3"] == corpus_text(arts[3]) == "T3. text 3"
    assert r[next(k for k, v in q.items() if v == "same")] == {"0", "3"}  # relevant from the whole corpus
