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


def test_relevant_ranks_match_a_sorted_list():
    from textmoco.evaluation.retrieval import relevant_ranks

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 40, generator=g).round(decimals=1)  # rounding makes ties
    relevant = [[3], [0, 39], [5, 6, 7], [12], [1, 2], [20, 30]]
    for i, docs in enumerate(relevant):
        order = sorted(range(40), key=lambda c: (-scores[i, c].item(), c))  # the slow reference: a full sort
        assert relevant_ranks(scores[i:i + 1], [docs])[0] == sorted(order.index(d) for d in docs)
    assert relevant_ranks(torch.tensor([[0.1, 0.9, 0.5]]), [[0, 1]]) == [[0, 2]]


def test_compare_rankings_script_reports_each_model_and_the_missed_queries(tmp_path, tiny_bert, capsys):
    from textrun import import_recipe

    from textmoco.data.beir import write_beir

    script = import_recipe("compare_rankings", folder="scripts")
    corpus = {f"d{i}": f"document number {i} about topic {i % 3}" for i in range(8)}
    queries = {"q0": "topic 0", "q1": "topic 1", "q2": "number 5"}
    relevant = {"q0": {"d0", "d3", "d6"}, "q1": {"d1"}, "q2": {"d5"}}
    beir = write_beir(tmp_path / "beir", queries, corpus, relevant, split="dev")
    script.main([tiny_bert, tiny_bert, "--eval_dir", str(beir), "--split", "dev", "--depth", "0"])
    out = capsys.readouterr().out
    assert "3 queries, 8 documents" in out and "1 relevant (2 queries)" in out and "2-5 relevant (1 queries)" in out
    rows = [line.split(None, 1)[1] for line in out.splitlines() if "hit@1" in line]
    assert len(rows) == 4 and rows[0] == rows[1] and rows[2] == rows[3]  # the same model twice: the same figures
    assert sum("'topic 0'" in line for line in out.splitlines()) == 1  # --depth 0 lists every query, once
