"""Retrieval evaluation: nDCG@10, MRR@10, Recall@1/10/100 of a query set against a corpus with relevance judgments.

The metrics are sentence-transformers' :class:`InformationRetrievalEvaluator` (cosine similarity, exhaustive
search) — not re-derived here. The BM25 baseline (``bm25s``) ranks the corpus itself and hands its top-100 lists to
the same evaluator's ``compute_metrics``, so both rows of a table come from one metric implementation.

Inputs (the evaluator's layout): ``queries`` {qid: text}, ``corpus`` {cid: text}, ``relevant`` {qid: {cid, ...}};
queries without a relevant document are ignored. Scores are returned x100 as
``{"ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "num_queries", "corpus_size"}``.
:class:`RetrievalEvaluator` holds one task and is the recipes' :class:`~textmoco.evaluation.protocol.Evaluator`.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping, Optional, Sequence

METRIC_KEYS = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100")


def make_evaluator(queries: Mapping[str, str], corpus: Mapping[str, str], relevant: Mapping[str, set],
                   batch_size: int = 64, name: str = "retrieval", show_progress_bar: bool = False):
    """An ``InformationRetrievalEvaluator`` computing exactly the metrics above (cosine only)."""
    try:
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    if not queries or not corpus:
        raise ValueError("retrieval evaluation needs at least one query and one corpus document")
    if not any(relevant.get(q) for q in queries):
        raise ValueError("no query has a relevant document; relevant maps query ids to sets of corpus ids")
    unknown = {c for q in queries for c in relevant.get(q, ()) if c not in corpus}
    if unknown:
        raise ValueError(f"{len(unknown)} relevant id(s) are not in the corpus, e.g. {sorted(unknown)[0]!r}")
    return InformationRetrievalEvaluator(
        dict(queries), dict(corpus), {q: set(v) for q, v in relevant.items()}, mrr_at_k=[10], ndcg_at_k=[10],
        accuracy_at_k=[1, 10], precision_recall_at_k=[1, 10, 100], map_at_k=[100], batch_size=batch_size,
        name=name, write_csv=False, score_functions={"cosine": cos_sim}, main_score_function="cosine",
        show_progress_bar=show_progress_bar)


def summarize(scores: Mapping[str, Mapping[Any, float]], evaluator) -> dict:
    """The evaluator's nested ``compute_metrics`` output -> flat x100 dict of :data:`METRIC_KEYS`."""
    out = {"ndcg@10": scores["ndcg@k"][10], "mrr@10": scores["mrr@k"][10], "recall@1": scores["recall@k"][1],
           "recall@10": scores["recall@k"][10], "recall@100": scores["recall@k"][100]}
    out = {k: round(100.0 * float(v), 2) for k, v in out.items()}
    out.update(num_queries=len(evaluator.queries), corpus_size=len(evaluator.corpus))
    return out


def as_sentence_transformer(model: Any):
    """A SentenceTransformer from a SentenceTransformer, a path/Hub id, or a textmoco ``TextEncoder`` (exported
    to a temporary directory: the vectors users get from the exported model)."""
    from sentence_transformers import SentenceTransformer

    if isinstance(model, SentenceTransformer):
        return model
    if isinstance(model, (str, os.PathLike)):
        from ..runs import st_device

        return SentenceTransformer(str(model), device=st_device())
    if hasattr(model, "export"):
        with tempfile.TemporaryDirectory(prefix="textmoco-eval-") as tmp:
            model.export(tmp)
            st = SentenceTransformer(tmp, device=str(next(model.parameters()).device))
        return st
    raise TypeError(f"cannot evaluate a {type(model).__name__}; pass a SentenceTransformer, a path or a TextEncoder")


def evaluate_retrieval(model: Any, queries: Optional[Mapping[str, str]] = None,
                       corpus: Optional[Mapping[str, str]] = None, relevant: Optional[Mapping[str, set]] = None,
                       batch_size: int = 64, evaluator=None) -> dict:
    """Dense retrieval scores (x100) of ``model`` (SentenceTransformer, path or TextEncoder) on the task
    (queries, corpus, relevant), or on ``evaluator``'s (a :func:`make_evaluator` result) when given."""
    evaluator = evaluator or make_evaluator(queries, corpus, relevant, batch_size)
    st = as_sentence_transformer(model)
    was_training = st.training
    st.eval()
    try:
        scores = evaluator.compute_all_metrics(st)["cosine"]
    finally:
        st.train(was_training)
    return summarize(scores, evaluator)


def ranked_lists_to_scores(ranked: Sequence[Sequence[tuple[str, float]]], evaluator) -> dict:
    """Any retriever's ranked lists -> the evaluator's metrics (x100). ``ranked[i]`` is a list of (corpus id,
    score) for ``evaluator.queries_ids[i]`` (at least the top 100)."""
    if len(ranked) != len(evaluator.queries_ids):
        raise ValueError(f"{len(ranked)} ranked lists for {len(evaluator.queries_ids)} queries")
    results = [[{"corpus_id": cid, "score": float(s)} for cid, s in hits] for hits in ranked]
    return summarize(evaluator.compute_metrics(results), evaluator)


def bm25_retrieval(queries: Optional[Mapping[str, str]] = None, corpus: Optional[Mapping[str, str]] = None,
                   relevant: Optional[Mapping[str, set]] = None, top_k: int = 100, stopwords: Optional[str] = "en",
                   evaluator=None) -> dict:
    """BM25 (``bm25s``, default parameters k1=1.5, b=0.75, lower-cased, English stopwords removed, no stemming)
    scored by the same evaluator metrics (x100); the task as in :func:`evaluate_retrieval`."""
    import bm25s

    evaluator = evaluator or make_evaluator(queries, corpus, relevant)
    corpus_ids = list(evaluator.corpus_ids)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(evaluator.corpus), stopwords=stopwords, show_progress=False),
                    show_progress=False)
    k = min(top_k, len(corpus_ids))
    docs, scores = retriever.retrieve(bm25s.tokenize(list(evaluator.queries), stopwords=stopwords,
                                                     show_progress=False), k=k, show_progress=False)
    ranked = [[(corpus_ids[int(d)], float(s)) for d, s in zip(row_d, row_s)] for row_d, row_s in zip(docs, scores)]
    return ranked_lists_to_scores(ranked, evaluator)


class RetrievalEvaluator:
    """One retrieval task as an :class:`~textmoco.evaluation.protocol.Evaluator`: ``evaluator(model)`` ->
    :func:`evaluate_retrieval`'s dict, ``evaluator.bm25()`` -> :func:`bm25_retrieval`'s on the same task;
    ``name`` (e.g. the split) prefixes the names in the run's metrics record."""

    primary_metric = "ndcg@10"

    def __init__(self, queries: Mapping[str, str], corpus: Mapping[str, str], relevant: Mapping[str, set],
                 batch_size: int = 64, name: str = ""):
        self.name = name
        self.evaluator = make_evaluator(queries, corpus, relevant, batch_size, name=name or "retrieval")

    def __call__(self, model: Any) -> dict:
        return evaluate_retrieval(model, evaluator=self.evaluator)

    def bm25(self, **kwargs) -> dict:
        return bm25_retrieval(evaluator=self.evaluator, **kwargs)

    def headline(self, scores: Mapping[str, Any]) -> dict:
        return {k: scores[k] for k in METRIC_KEYS if k in scores}


def relevant_ranks(scores, relevant: Sequence[Sequence[int]]) -> list[list[int]]:
    """0-based rank of every relevant document of every query in an exhaustive ranking: ``scores`` [Q, C] (query x
    corpus similarities), ``relevant[i]`` the corpus indices relevant to query i -> ``ranks[i]``, sorted ascending
    (rank 0 = first). Ties are ranked by corpus index, as a stable sort would. For per-query diagnosis (which
    queries does one model miss that another finds: scripts/compare_rankings.py); the metrics themselves stay
    :func:`evaluate_retrieval`'s."""
    import torch

    scores = torch.as_tensor(scores)
    ranks = []
    for row, docs in zip(scores, relevant):
        docs = torch.as_tensor(list(docs), dtype=torch.long)
        own = row[docs][:, None]
        tied_before = (row[None, :] == own) & (torch.arange(len(row))[None, :] < docs[:, None])
        ranks.append(sorted(((row[None, :] > own).sum(1) + tied_before.sum(1)).tolist()))
    return ranks
