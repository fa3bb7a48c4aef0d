"""A retrieval test set in BEIR's layout (what ``beir.datasets.data_loader.GenericDataLoader`` and MTEB read), for
the retrieval recipe's ``--eval_dir``::

    DIR/corpus.jsonl       {"_id": "d1", "title": "...", "text": "..."}   one document a line (title optional)
    DIR/queries.jsonl      {"_id": "q1", "text": "..."}
    DIR/qrels/SPLIT.tsv    query-id <TAB> corpus-id <TAB> score, with a header row; score > 0 = relevant

:func:`read_beir` returns the ``(queries, corpus, relevant)`` triple of
:class:`~textmoco.evaluation.retrieval.RetrievalEvaluator`: the queries are those with at least one relevant
document in the split, a document's text is ``title + " " + text`` (stripped; MTEB's convention).
:func:`write_beir` writes such a triple (e.g. the wiki-vital task, to evaluate with other tools).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Mapping

from .text import iter_jsonl


def _read_jsonl(path: Path, what: str) -> dict[str, dict]:
    if not path.is_file():
        raise ValueError(f"--eval_dir: {str(path)!r} not found; a BEIR directory holds corpus.jsonl, "
                         "queries.jsonl and qrels/<split>.tsv")
    rows: dict[str, dict] = {}
    for n, row in iter_jsonl(path, repr(str(path))):
        if "_id" not in row or not isinstance(row.get("text"), str):
            raise ValueError(f"{str(path)!r}, line {n}: each {what} line must be an object with '_id' and a "
                             f"'text' string, got {json.dumps(row)[:80]!r}")
        rows[str(row["_id"])] = row
    if not rows:
        raise ValueError(f"{str(path)!r} has no {what}s")
    return rows


def read_beir(directory: str | os.PathLike, split: str = "test") -> tuple[dict, dict, dict]:
    """(queries {qid: text}, corpus {cid: text}, relevant {qid: {cid, ...}}) of ``directory``'s ``split``."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"--eval_dir {str(root)!r} is not a directory; pass a BEIR-layout directory (corpus.jsonl, "
                         "queries.jsonl, qrels/<split>.tsv)")
    qrels = root / "qrels" / f"{split}.tsv"
    if not qrels.is_file():
        found = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise ValueError(f"--eval_split {split!r}: {str(qrels)!r} not found; the splits in {str(root)!r} are "
                         f"{found or 'none (no qrels/*.tsv)'}")
    corpus = {cid: f"{row.get('title') or ''} {row['text']}".strip()
              for cid, row in _read_jsonl(root / "corpus.jsonl", "document").items()}
    all_queries = {qid: row["text"] for qid, row in _read_jsonl(root / "queries.jsonl", "query").items()}
    relevant: dict[str, set] = {}
    with open(qrels, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader, None)  # header
        for n, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise ValueError(f"{str(qrels)!r}, line {n}: expected query-id, corpus-id, score; got {row}")
            qid, cid, score = row[0], row[1], row[2]
            for key, table, what in ((qid, all_queries, "query"), (cid, corpus, "document")):
                if key not in table:
                    raise ValueError(f"{str(qrels)!r}, line {n}: {what} id {key!r} is not in the {what} file")
            try:
                score = float(score)
            except ValueError:
                raise ValueError(f"{str(qrels)!r}, line {n}: the score {score!r} is not a number") from None
            if score > 0:
                relevant.setdefault(qid, set()).add(cid)
    if not relevant:
        raise ValueError(f"{str(qrels)!r} has no relevant (score > 0) query-document pair")
    return {q: all_queries[q] for q in relevant}, corpus, relevant


def write_beir(directory: str | os.PathLike, queries: Mapping[str, str], corpus: Mapping[str, str],
               relevant: Mapping[str, set], split: str = "test") -> Path:
    """Write a (queries, corpus, relevant) triple in the layout :func:`read_beir` reads (titles empty)."""
    root = Path(directory)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": c, "title": "", "text": t}) + "\n" for c, t in corpus.items())
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    with open(root / "qrels" / f"{split}.tsv", "w", encoding="utf-8", newline="") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{c}\t1\n" for q, cids in relevant.items() for c in sorted(cids))
    return root
