"""Text data: the bundled STS Benchmark files and small, strict readers for unlabeled sentences.

Bundled data (``textmoco/data/sts/``, licence notice in ``LICENSE-stsbenchmark.txt`` next to the files): STS-B
train/dev/test as ``score<TAB>sentence1<TAB>sentence2`` (scores 0-5), read with ``csv.QUOTE_NONE`` because the
sentences contain ``"``.

Rules shared by every reader (documented behaviour, not heuristics):

- Sentences are stripped of surrounding whitespace.
- Empty sentences are an error by default (the message says how many and the first line); pass
  ``drop_empty=True`` to drop them instead.
- ``dedup=True`` (default) keeps the first occurrence of each sentence, order-stable. Duplicates in a contrastive
  corpus become false negatives that the per-sample id guard cannot see, so they are removed up front.
- Fewer than 2 sentences left is an error (a contrastive batch needs negatives).
- Every problem raises ``ValueError`` naming the file/column and the fix.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from torch.utils.data import Dataset

STS_DIR = Path(__file__).resolve().parent / "sts"
STS_SPLITS = {"train": "stsb-train.tsv", "dev": "stsb-dev.tsv", "validation": "stsb-dev.tsv",
              "test": "stsb-test.tsv"}
SENTENCE_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")


def _check_file(path: str | os.PathLike, kinds: str = ".txt/.csv/.tsv/.jsonl") -> Path:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"file not found: {str(p)!r}; pass the path of an existing {kinds} file")
    if p.stat().st_size == 0:
        raise ValueError(f"file is empty: {str(p)!r}; it must contain at least 2 sentences")
    return p


def iter_jsonl(path: str | os.PathLike, source: str) -> Iterator[tuple[int, dict]]:
    """(line number from 1, object) for every non-blank line of a .jsonl file; ``ValueError`` naming ``source``
    and the line for invalid JSON or a line that is not a JSON object."""
    with open(path, encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ValueError(f"{source}, line {line_no}: not valid JSON ({e.msg}); each line must be one "
                                 "JSON object") from None
            if not isinstance(record, dict):
                raise ValueError(f"{source}, line {line_no}: expected a JSON object, got "
                                 f"{type(record).__name__}; each line must be like {{\"text\": \"...\"}}")
            yield line_no, record


def _read_table(p: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a .csv (standard quoting) or .tsv (tab, ``QUOTE_NONE``: quotes are literal) file with a header row.

    Returns (columns, [(line_number, row_dict), ...]); line numbers are 1-based file lines (header = line 1).
    """
    tsv = p.suffix.lower() == ".tsv"
    with open(p, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        columns = [c for c in (reader.fieldnames or [])]
        rows = [(reader.line_num, row) for row in reader]
    if not columns:
        raise ValueError(f"file has no header row: {str(p)!r}; the first line must name the columns")
    if not rows:
        raise ValueError(f"file has a header but no data rows: {str(p)!r}; add at least 2 rows")
    return columns, rows


def _require_column(column: Optional[str], columns: Sequence[str], source: str, what: str = "text_column") -> str:
    if column is None:
        raise ValueError(f"{source} has columns {list(columns)}; pass {what}= (--{what}) naming the one that holds "
                         "the text")
    if column not in columns:
        raise ValueError(f"column {column!r} not found in {source}; the columns are {list(columns)}. "
                         f"Pass one of them as {what}= (--{what})")
    return column


def clean_sentences(texts: Sequence[Any], lines: Sequence[int], source: str, *, drop_empty: bool = False,
                    dedup: bool = True, unit: str = "line") -> list[str]:
    """Apply the shared rules (strip, empty check, dedup, >= 2 left) to raw texts.

    ``lines[i]`` is the 1-based line (``unit="line"``) or row (``unit="row"``) of ``texts[i]`` for error messages.
    """
    out: list[str] = []
    empty: list[int] = []
    for text, line in zip(texts, lines):
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise ValueError(f"{source}, {unit} {line}: expected a string, got {type(text).__name__} ({text!r}); "
                             "the text column must hold strings")
        text = text.strip()
        if not text:
            empty.append(line)
            continue
        out.append(text)
    if empty and not drop_empty:
        raise ValueError(f"{source} has {len(empty)} empty sentence(s), the first at {unit} {empty[0]}; "
                         "remove them or pass drop_empty=True (--drop_empty) to drop them")
    n_before = len(out)
    if dedup:
        out = list(dict.fromkeys(out))
    if len(out) < 2:
        detail = f" after removing duplicates ({n_before} sentences, {len(out)} unique)" if dedup else ""
        raise ValueError(f"{source} has fewer than 2 usable sentences{detail}; contrastive training needs "
                         "at least 2 different sentences")
    return out


def read_sentences(path: str | os.PathLike, text_column: Optional[str] = None, *, drop_empty: bool = False,
                   dedup: bool = True) -> list[str]:
    """Read unlabeled sentences from a file.

    - ``.txt``: one sentence per line (``text_column`` ignored).
    - ``.csv`` / ``.tsv``: header row required; ``text_column`` names the column (.tsv is read with
      ``QUOTE_NONE``: quote characters are part of the text).
    - ``.jsonl``: one JSON object per line; ``text_column`` names the key. Blank lines are skipped.

    Returns the list of N sentences (see the module docstring for strip/empty/dedup rules).
    """
    p = _check_file(path)
    suffix = p.suffix.lower()
    source = f"file {str(p)!r}"
    if suffix == ".txt":
        texts = p.read_text(encoding="utf-8").splitlines()
        lines = list(range(1, len(texts) + 1))
    elif suffix in (".csv", ".tsv"):
        columns, rows = _read_table(p)
        col = _require_column(text_column, columns, source)
        texts = [row.get(col) for _, row in rows]
        lines = [line for line, _ in rows]
    elif suffix == ".jsonl":
        texts, lines = [], []
        for line_no, record in iter_jsonl(p, source):
            if text_column is None or text_column not in record:
                where = f"line {line_no} of {source}" if texts else source
                _require_column(text_column, list(record), where)
            texts.append(record[text_column])
            lines.append(line_no)
        if not texts:
            raise ValueError(f"file has no JSON records: {str(p)!r}; add at least 2 lines")
    else:
        raise ValueError(f"unsupported file type {p.suffix!r} for {str(p)!r}; use one of {list(SENTENCE_SUFFIXES)} "
                         "or load_dataset_sentences() for a Hugging Face dataset")
    return clean_sentences(texts, lines, source, drop_empty=drop_empty, dedup=dedup)


def load_dataset_sentences(name: str, text_column: str, split: str = "train", config: Optional[str] = None, *,
                           drop_empty: bool = False, dedup: bool = True, **load_kwargs: Any) -> list[str]:
    """Sentences from ``datasets.load_dataset(name, config, split=split, **load_kwargs)[text_column]``.

    ``name`` is a Hub dataset id, a local dataset directory, or a builder name such as ``"csv"`` (with
    ``data_files=...`` in ``load_kwargs``). Rows are numbered from 1 in error messages.
    """
    from .sources import load_hf_dataset

    ds = load_hf_dataset(name, split, config, **load_kwargs)
    source = f"dataset {name!r} (split {split!r})"
    col = _require_column(text_column, ds.column_names, source)
    texts = ds[col]
    return clean_sentences(list(texts), range(1, len(texts) + 1), source, drop_empty=drop_empty, dedup=dedup,
                           unit="row")


def _sts_path(split_or_path: str | os.PathLike) -> Path:
    key = str(split_or_path)
    if key in STS_SPLITS:
        return STS_DIR / STS_SPLITS[key]
    p = Path(split_or_path)
    if p.suffix.lower() in (".csv", ".tsv") or p.exists():
        return _check_file(p, kinds=".csv/.tsv")
    raise ValueError(f"unknown STS split {key!r}; use one of {sorted(set(STS_SPLITS))} or a path to a .csv/.tsv "
                     "file with columns sentence1, sentence2, score")


def load_sts_pairs(split_or_path: str | os.PathLike = "test") -> tuple[list[str], list[str], list[float]]:
    """Scored sentence pairs: (sentences1, sentences2, scores), three lists of length P.

    ``split_or_path``: ``"train"``, ``"dev"`` (alias ``"validation"``), ``"test"`` (bundled STS-B: 5749 / 1500 /
    1379 pairs, scores 0-5) or a user ``.csv``/``.tsv`` file with a header containing ``sentence1``,
    ``sentence2`` and ``score`` (any order, extra columns ignored; ``.tsv`` read with ``QUOTE_NONE``).
    """
    p = _sts_path(split_or_path)
    source = f"file {str(p)!r}"
    columns, rows = _read_table(p)
    missing = [c for c in ("sentence1", "sentence2", "score") if c not in columns]
    if missing:
        raise ValueError(f"{source} lacks column(s) {missing}; the columns are {columns}. An STS file needs a "
                         "header row with sentence1, sentence2 and score")
    s1, s2, scores = [], [], []
    for line, row in rows:
        a, b, raw = (row.get("sentence1") or "").strip(), (row.get("sentence2") or "").strip(), row.get("score")
        if not a or not b:
            raise ValueError(f"{source}, line {line}: empty sentence; every pair needs two non-empty sentences")
        try:
            score = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{source}, line {line}: score {raw!r} is not a number; the score column must hold "
                             "numbers") from None
        s1.append(a)
        s2.append(b)
        scores.append(score)
    return s1, s2, scores


def sts_train_sentences() -> list[str]:
    """The unique sentences of bundled STS-B train (labels unused): sentence1 then sentence2 of each pair, first
    occurrence kept, so the order is stable across runs (10536 sentences)."""
    s1, s2, _ = load_sts_pairs("train")
    return list(dict.fromkeys(s for pair in zip(s1, s2) for s in pair))


class SentenceDataset(Dataset):
    """A list of sentences as a map-style dataset: ``ds[i]`` is the i-th sentence (str).

    The core attaches the sample id (= the index ``i``) itself; the encoder's ``collate`` turns a list of these
    strings into token tensors.
    """

    def __init__(self, sentences: Sequence[str]):
        sentences = list(sentences)
        bad = next((i for i, s in enumerate(sentences) if not isinstance(s, str)), None)
        if bad is not None:
            raise ValueError(f"SentenceDataset item {bad} is {type(sentences[bad]).__name__}, not str; pass a list "
                             "of strings (e.g. from read_sentences)")
        if len(sentences) < 2:
            raise ValueError(f"SentenceDataset needs at least 2 sentences, got {len(sentences)}")
        self.sentences = sentences

    @classmethod
    def from_file(cls, path: str | os.PathLike, text_column: Optional[str] = None, **kwargs: Any) -> "SentenceDataset":
        """``SentenceDataset(read_sentences(path, text_column, **kwargs))``."""
        return cls(read_sentences(path, text_column, **kwargs))

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, index: int) -> str:
        return self.sentences[index]
