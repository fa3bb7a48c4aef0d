"""Named unlabeled corpora that ship with textmoco (offline), for ``--corpus``.

- ``stsb-train``: the 11.5k unique sentences of STS-B train (labels unused). Transductive for STS12-16: STS-B was
  compiled from the STS 2012-2017 data, so many STS12-16 test sentences occur in it (see
  :func:`textmoco.evaluation.sts_suite.overlap`).
- ``wiki-vital``: 29k sentences of the lead summaries of 8,026 Wikipedia "vital articles" (CC BY-SA 4.0, notice in
  ``data/wiki/NOTICE.md``), none of them an evaluation sentence. The articles on lines whose 0-based index is
  divisible by 5 (the retrieval test split of ``recipes/train_retrieval.py``) are left out.
- ``stsb-train+wiki-vital``: both.
"""
from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

from .text import sts_train_sentences

WIKI_FILE = Path(__file__).resolve().parent / "wiki" / "wiki_vital_train_sentences.txt.gz"
CORPORA = ("stsb-train", "wiki-vital", "stsb-train+wiki-vital")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(\d])")


def wiki_vital_sentences() -> list[str]:
    with gzip.open(WIKI_FILE, "rt", encoding="utf-8") as f:
        return [line for line in f.read().split("\n") if line]


def load_corpus(name: str) -> list[str]:
    """The sentences of a named corpus (unique, order-stable)."""
    if name not in CORPORA:
        raise ValueError(f"corpus={name!r} is not one of {list(CORPORA)}; for your own data use --train_file "
                         "or --dataset")
    parts = {"stsb-train": sts_train_sentences, "wiki-vital": wiki_vital_sentences}
    return list(dict.fromkeys(s for part in name.split("+") for s in parts[part]()))


def build_wiki_vital_corpus(articles_jsonl: str | os.PathLike, out: str | os.PathLike = WIKI_FILE,
                            min_words: int = 4, max_words: int = 80) -> int:
    """Rebuild ``wiki-vital`` from ``articles.jsonl``: the extracts of the articles whose line index is not
    divisible by 5, split into sentences, 4-80 words, deduplicated. Returns the sentence count."""
    sentences = []
    with open(articles_jsonl, encoding="utf-8") as f:
        for index, line in enumerate(f):
            if index % 5 == 0:
                continue
            for s in _SENTENCE_END.split(json.loads(line)["extract"]):
                words = s.split()  # also folds newlines inside an extract
                if min_words <= len(words) <= max_words:
                    sentences.append(" ".join(words))
    sentences = list(dict.fromkeys(sentences))
    with gzip.GzipFile(out, "wb", compresslevel=9, mtime=0) as f:
        f.write("\n".join(sentences).encode("utf-8"))
    return len(sentences)
