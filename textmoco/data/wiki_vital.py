"""The wiki-vital retrieval task (issue 12): the articles file, its fixed test / dev / train split by line index,
the corpus text of an article, and the (queries, corpus, relevant) triple that ``InformationRetrievalEvaluator``
takes. The articles are CC BY-SA 4.0 Wikipedia text: the file is read from ../shared/data/wiki-vital/ (or a path
the user passes), never shipped in the repository.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

WIKI_VITAL_HELP = ("the wiki-vital articles file (articles.jsonl: one JSON object a line with title, description, "
                   "topic, extract; CC BY-SA 4.0 Wikipedia text, see the README next to it) was not found at {path}. "
                   "Pass --articles PATH (or --data_dir DIR holding articles.jsonl); the textmoco repository expects "
                   "it at ../shared/data/wiki-vital/articles.jsonl")


def read_articles(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(WIKI_VITAL_HELP.format(path=str(p)))
    with open(p, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def retrieval_splits(articles: Sequence[dict], test_every: int = 5, dev_every: int = 10) -> dict[str, list[int]]:
    """Line indices: ``test`` = index % test_every == 0 (never trained on); of the rest, every ``dev_every``-th
    (by position among the non-test lines) is ``dev``; the others are ``train``."""
    rest = [i for i in range(len(articles)) if i % test_every]
    return {"test": [i for i in range(len(articles)) if i % test_every == 0],
            "dev": rest[::dev_every], "train": [i for j, i in enumerate(rest) if j % dev_every]}


def corpus_text(article: dict) -> str:
    return f"{article['title']}. {article['extract']}"


def retrieval_task(articles: Sequence[dict], indices: Iterable[int]) -> tuple[dict, dict, dict]:
    """(queries, corpus, relevant) for ``InformationRetrievalEvaluator``: one query per distinct non-empty short
    description among ``indices``; relevant = every article of the WHOLE corpus with exactly that description;
    the corpus is all articles."""
    corpus = {str(i): corpus_text(a) for i, a in enumerate(articles)}
    by_desc: dict[str, set[str]] = {}
    for i, a in enumerate(articles):
        d = (a.get("description") or "").strip()
        if d:
            by_desc.setdefault(d, set()).add(str(i))
    descs = list(dict.fromkeys((articles[i].get("description") or "").strip() for i in indices))
    descs = [d for d in descs if d]
    queries = {f"q{n}": d for n, d in enumerate(descs)}
    relevant = {f"q{n}": by_desc[d] for n, d in enumerate(descs)}
    return queries, corpus, relevant
