"""Streaming corpora (larger than memory): a ``datasets.IterableDataset`` as training items for the one trainer.

Order. By default the stream is read in its own order. ``shuffle_block=N`` reads N examples at a time and yields
them in a random order drawn from ``(seed, epoch, block index)``: a local shuffle whose state is only a position,
so a resumed run still equals an uninterrupted one. (datasets' own ``shuffle(buffer_size=...)`` keeps no buffer in
its ``state_dict``: its buffered examples are lost on resume, so it is not used here.) A block is N examples in
memory; ``N >= `` the stream's length is a full shuffle of each epoch.

Position. :meth:`StreamingDataset.state_dict` is the position after the last example yielded: the iterable's own
state (in order), or the iterable's state at the start of the current block plus how many of the block's examples
were taken (block shuffle). The trainer reads it after each consumed batch (no workers, no prefetch) and saves it in
every checkpoint, one per process.
"""
from __future__ import annotations

import hashlib
from itertools import islice
from typing import Any, Iterator, Optional

import numpy as np
from torch.utils.data import IterableDataset as TorchIterableDataset

from .retrieval import random_crop


def text_id(text: str) -> int:
    """A stable 63-bit id of a text (identical texts share it, so duplicates are guarded as the same sample)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def is_streaming(dataset: Any) -> bool:
    return isinstance(dataset, TorchIterableDataset)


class StreamingDataset(TorchIterableDataset):
    """A ``datasets.IterableDataset`` as training items ``(sample id, item)``, in order or block-shuffled.

    ``text_column``: documents; items are two crops (``crop=dict(...)`` of :class:`~textmoco.data.retrieval.
    CropDataset` options) or, with ``crop=None``, the text twice (dropout views). Or ``anchor_column`` /
    ``positive_column``: pairs. The sample id is ``id_column`` when given, else a stable hash of the text (anchor).
    ``shuffle_block``: 0 = the stream's order; N > 0 = each run of N examples in a seeded random order (module
    docstring). :meth:`shard` gives each process its own part (``datasets.distributed.split_dataset_by_node``), block
    shuffled within that part. Use ``num_workers=0``.
    """

    def __init__(self, dataset: Any, text_column: Optional[str] = None, *, anchor_column: Optional[str] = None,
                 positive_column: Optional[str] = None, id_column: Optional[str] = None,
                 crop: Optional[dict] = None, seed: int = 0, shuffle_block: int = 0):
        if (text_column is None) == (anchor_column is None):
            raise ValueError("StreamingDataset needs either text_column or anchor_column + positive_column")
        if isinstance(shuffle_block, bool) or not isinstance(shuffle_block, int) or shuffle_block < 0:
            raise ValueError(f"shuffle_block={shuffle_block!r} is invalid: use 0 (the stream's order) or a block of "
                             "N > 0 examples (--shuffle_block)")
        needed = [c for c in (text_column, anchor_column, positive_column if anchor_column else None, id_column) if c]
        names = dataset.column_names
        if names is None:  # features unknown until read: look at the first example (a fresh, separate iteration)
            first = next(iter(dataset), None)
            if first is None:
                raise ValueError("the streaming dataset is empty")
            names = list(first)
        missing = [c for c in needed if c not in names]
        if missing:
            raise ValueError(f"the streaming dataset has no column {missing[0]!r}; its columns are {list(names)}. "
                             "Pass the column that holds the text (--text_column)")
        self.dataset, self.text_column, self.anchor_column = dataset, text_column, anchor_column
        self.positive_column, self.id_column, self.seed, self.epoch = positive_column, id_column, int(seed), 0
        self.crop = None if crop is None else {"ratio_min": 0.1, "ratio_max": 0.5, "min_length": 4,
                                               "delete_rate": 0.0, **crop}
        self.shuffle_block = shuffle_block
        # block shuffle: the iterable's state where the current block starts (None: the epoch's start), the
        # block's index in the epoch, and how many of its examples were yielded; _resume: a loaded position
        self._position, self._resume = {"block_start": None, "block": 0, "taken": 0}, None

    def shard(self, rank: int, world_size: int) -> "StreamingDataset":
        """This process's part of the stream (``split_dataset_by_node``); itself when ``world_size == 1``."""
        if world_size > 1:
            from datasets.distributed import split_dataset_by_node
            self.dataset = split_dataset_by_node(self.dataset, rank=rank, world_size=world_size)
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict:
        if not self.shuffle_block:
            return self.dataset.state_dict()
        return {"shuffle_block": self.shuffle_block, **self._position}  # a new dict every yield, never mutated

    def load_state_dict(self, state: dict) -> None:
        saved_block = state.get("shuffle_block", 0)
        if saved_block != self.shuffle_block:
            raise ValueError(f"the checkpoint's stream position was saved with shuffle_block={saved_block}, this run "
                             f"has shuffle_block={self.shuffle_block}: resume with --shuffle_block {saved_block}")
        if not self.shuffle_block:
            self.dataset.load_state_dict(state)
            return
        if state["block_start"] is not None:
            self.dataset.load_state_dict(state["block_start"])
        self._resume = {k: state[k] for k in ("block_start", "block", "taken")}

    def _item(self, row: dict) -> tuple[int, Any]:
        if self.anchor_column is not None:
            anchor, positive = row[self.anchor_column], row[self.positive_column]
            if not isinstance(positive, str) or not positive.strip():
                raise ValueError(f"streaming row {row!r:.80} has a missing or empty {self.positive_column!r}")
            sid = int(row[self.id_column]) if self.id_column else text_id(anchor)
            return sid, (anchor, positive)
        text = row[self.text_column]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"streaming row {row!r:.80} has a missing or empty {self.text_column!r}")
        sid = int(row[self.id_column]) if self.id_column else text_id(text)
        if self.crop is None:
            return sid, text
        words = text.split()
        if len(words) < self.crop["min_length"]:
            raise ValueError(f"a streamed document has {len(words)} words, fewer than the crop minimum of "
                             f"{self.crop['min_length']}: {text[:60]!r}")
        rng = np.random.default_rng([self.seed, self.epoch, sid])
        return sid, tuple(" ".join(random_crop(words, rng, **self.crop)) for _ in range(2))

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        if not self.shuffle_block:
            for row in self.dataset:
                yield self._item(row)
            return
        position = self._resume or {"block_start": None, "block": 0, "taken": 0}
        self._resume = None
        rows = iter(self.dataset)  # starts at the loaded block start, or at the epoch's start
        start, block, skip = position["block_start"], position["block"], position["taken"]
        while True:
            chunk = list(islice(rows, self.shuffle_block))
            if not chunk:
                return
            following = self.dataset.state_dict()  # the position after this block = where the next one starts
            order = np.random.default_rng([self.seed, self.epoch, block]).permutation(len(chunk))
            for taken in range(skip + 1, len(chunk) + 1):
                self._position = {"block_start": start, "block": block, "taken": taken}
                yield self._item(chunk[order[taken - 1]])
            start, block, skip = following, block + 1, 0
