"""Retrieval training data: Contriever crops of documents, (anchor, positive[, negative]) pairs (streaming corpora:
:mod:`textmoco.data.streaming`).

All of them are ordinary datasets for the one trainer and the one data path (:func:`textmoco.data.loader.
build_train_loader`): an item is a tuple of texts — ``(view_a, view_b)`` or ``(anchor, positive, negatives)`` —
that the text encoder's collator tokenizes as view a (query encoder) and view b (momentum encoder, then the queue).

Sample ids (what the id guard keeps out of an anchor's negatives) come from :meth:`sample_id`: the document for
crops (so a later crop of the same document is never its negative), the row for pairs unless the data supplies an
``id`` column (e.g. one id per distinct query, so two articles answering the same query are not negatives of each
other), a stable hash of the text (or an ``id_column``) for streaming corpora.

Randomness of the crops comes from a generator seeded by ``(seed, epoch, sample id)``, never from a global RNG:
a resumed run draws exactly the crops the uninterrupted run drew, whatever the worker or prefetch order.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from .text import iter_jsonl

# --------------------------------------------------------------------------------------------------- crops


def random_crop(words: Sequence[str], rng: np.random.Generator, ratio_min: float = 0.1, ratio_max: float = 0.5,
                min_length: int = 4, delete_rate: float = 0.0) -> list[str]:
    """One Contriever crop: a random contiguous span of ``words`` whose length is a uniform fraction in
    [ratio_min, ratio_max] of the document (at least ``min_length`` words), then each word deleted with
    probability ``delete_rate`` (at least one kept)."""
    n = len(words)
    ratio = rng.uniform(ratio_min, ratio_max)
    length = min(n, max(min_length, int(round(ratio * n))))
    start = int(rng.integers(0, n - length + 1))
    span = list(words[start:start + length])
    if delete_rate > 0:
        keep = rng.random(len(span)) >= delete_rate
        kept = [w for w, k in zip(span, keep) if k]
        span = kept or [span[int(rng.integers(len(span)))]]
    return span


class CropDataset(Dataset):
    """Documents -> two independent random crops each (Contriever's unsupervised views).

    ``ds[i]`` is ``(crop_a, crop_b)`` of document ``i`` (two strings); the sample id is ``i`` (the document), so the
    id guard drops every other crop of the same document from its negatives. Tokens are whitespace words (the
    collator then truncates each crop at ``max_length`` sub-word tokens).

    Args:
        documents: the texts. Each must have at least ``min_length`` words (``ValueError`` naming the first
            short one otherwise, before training starts).
        ratio_min, ratio_max: span length as a fraction of the document (Contriever: 0.1-0.5).
        min_length: the crop's minimum length in words (default 4).
        delete_rate: optional word deletion inside each crop (Contriever: 0.1 with ``--augment delete``).
        seed: with the epoch (``set_epoch``, called by the trainer) and the sample id, seeds each item's crops.
    """

    def __init__(self, documents: Sequence[str], ratio_min: float = 0.1, ratio_max: float = 0.5,
                 min_length: int = 4, delete_rate: float = 0.0, seed: int = 0):
        if not 0 < ratio_min <= ratio_max <= 1:
            raise ValueError(f"crop ratios must satisfy 0 < ratio_min <= ratio_max <= 1, got {ratio_min}, {ratio_max}")
        if not 0 <= delete_rate < 1:
            raise ValueError(f"delete_rate={delete_rate} must be in [0, 1)")
        if min_length < 1:
            raise ValueError(f"min_length={min_length} must be >= 1")
        self.words = [str(d).split() for d in documents]
        short = [i for i, w in enumerate(self.words) if len(w) < min_length]
        if short:
            i = short[0]
            raise ValueError(f"{len(short)} document(s) are shorter than the crop minimum of {min_length} words, the "
                             f"first is document {i} ({len(self.words[i])} words: {str(documents[i])[:60]!r}); drop "
                             "them or lower min_length (--crop_min_length)")
        if len(self.words) < 2:
            raise ValueError(f"CropDataset needs at least 2 documents, got {len(self.words)}")
        self.ratio_min, self.ratio_max, self.min_length = ratio_min, ratio_max, min_length
        self.delete_rate, self.seed, self.epoch = delete_rate, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.words)

    def sample_id(self, index: int) -> int:
        return index

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> tuple[str, str]:
        rng = self.rng(index)
        crop = lambda: " ".join(random_crop(self.words[index], rng, self.ratio_min, self.ratio_max,  # noqa: E731
                                            self.min_length, self.delete_rate))
        return crop(), crop()


# --------------------------------------------------------------------------------------------------- pairs

PAIR_SUFFIXES = (".csv", ".tsv", ".jsonl")


class PairDataset(Dataset):
    """(anchor, positive[, negatives]) rows: ``ds[i]`` is ``(anchor, positive)`` or ``(anchor, positive,
    (negative_1, ...))``. The query encoder encodes the anchor, the momentum encoder the positive (which enters
    the queue); explicit negatives are encoded by the momentum encoder without gradient and join their anchor's
    negatives. ``ids``: one sample id per row (default: the row number)."""

    def __init__(self, anchors: Sequence[str], positives: Sequence[str],
                 negatives: Optional[Sequence[Sequence[str]]] = None, ids: Optional[Sequence[int]] = None,
                 source: str = "pairs"):
        if len(anchors) != len(positives):
            raise ValueError(f"{source}: {len(anchors)} anchors but {len(positives)} positives")
        _check_texts(anchors, "anchor", source)
        _check_texts(positives, "positive", source)
        if negatives is not None:
            negatives = [tuple(n) for n in negatives]
            widths = {len(n) for n in negatives}
            if len(negatives) != len(anchors) or len(widths) != 1 or 0 in widths:
                raise ValueError(f"{source}: every row needs the same number (>= 1) of negatives")
            for j in range(widths.pop()):
                _check_texts([n[j] for n in negatives], "negative" if j == 0 else f"negative_{j + 1}", source)
        if ids is not None:
            ids = [int(i) for i in ids]
            if len(ids) != len(anchors):
                raise ValueError(f"{source}: {len(ids)} ids for {len(anchors)} rows")
        if len(anchors) < 2:
            raise ValueError(f"{source}: needs at least 2 pairs, got {len(anchors)}")
        self.anchors, self.positives, self.negatives, self.ids = list(anchors), list(positives), negatives, ids

    def __len__(self) -> int:
        return len(self.anchors)

    def sample_id(self, index: int) -> int:
        return index if self.ids is None else self.ids[index]

    def __getitem__(self, index: int):
        if self.negatives is None:
            return self.anchors[index], self.positives[index]
        return self.anchors[index], self.positives[index], self.negatives[index]

    @classmethod
    def from_columns(cls, columns: dict[str, Sequence[Any]], source: str = "pairs", anchor_column: str = "anchor",
                     positive_column: str = "positive", id_column: Optional[str] = "id") -> "PairDataset":
        """From a mapping column name -> values (a ``datasets.Dataset`` works: ``ds.to_dict()`` or ``ds``
        itself). Negatives: a ``negative`` column and/or ``negative_1``, ``negative_2``, ... (ST's layout)."""
        names = list(columns.column_names if hasattr(columns, "column_names") else columns.keys())
        for col, what in ((anchor_column, "anchor"), (positive_column, "positive")):
            if col not in names:
                raise ValueError(f"{source} has no {what} column {col!r}; the columns are {names}. A pairs file "
                                 f"needs columns {anchor_column!r} and {positive_column!r} (+ optional 'negative')")
        neg_cols = [c for c in names if c == "negative" or (c.startswith("negative_") and c[9:].isdigit())]
        negatives = list(zip(*[list(columns[c]) for c in neg_cols])) if neg_cols else None
        ids = list(columns[id_column]) if id_column and id_column in names else None
        return cls(list(columns[anchor_column]), list(columns[positive_column]), negatives, ids, source)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> "PairDataset":
        """``.csv`` / ``.tsv`` (header row; .tsv read with ``QUOTE_NONE``) or ``.jsonl`` (one object a line)."""
        return cls.from_columns(*_read_columns(path), **kwargs)

    @classmethod
    def from_dataset(cls, dataset: Any, **kwargs: Any) -> "PairDataset":
        """From a ``datasets.Dataset`` (map-style; for streaming use :class:`StreamingDataset`)."""
        return cls.from_columns({c: dataset[c] for c in dataset.column_names},
                                kwargs.pop("source", "dataset"), **kwargs)


def _check_texts(texts: Sequence[Any], what: str, source: str) -> None:
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"{source}: {len(bad)} row(s) have a missing or empty {what!r}, the first is data row "
                         f"{bad[0] + 1} ({texts[bad[0]]!r}); fill or drop them before training")


def _read_columns(path: str | os.PathLike) -> tuple[dict[str, list], str]:
    p = Path(path)
    source = f"file {str(p)!r}"
    if not p.is_file():
        raise ValueError(f"pairs file not found: {str(p)!r}; pass an existing .csv/.tsv/.jsonl file")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        tsv = suffix == ".tsv"
        with open(p, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if tsv else ",",
                                    quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
            rows = list(reader)
            names = list(reader.fieldnames or [])
    elif suffix == ".jsonl":
        rows = [record for _, record in iter_jsonl(p, source)]
        names = list(dict.fromkeys(k for r in rows for k in r))
    else:
        raise ValueError(f"unsupported pairs file type {p.suffix!r} for {str(p)!r}; use one of {list(PAIR_SUFFIXES)}")
    return {c: [r.get(c) for r in rows] for c in names}, source
