"""The one place the trainer's DataLoader is built (:func:`build_train_loader`), for every kind of training data.

- Map-style datasets (sentences, images, :class:`~textmoco.data.retrieval.CropDataset`,
  :class:`~textmoco.data.retrieval.PairDataset`): shuffled with the loader's own generator (starting an epoch's
  iterator never draws from the global RNG), each item paired with its sample id — ``dataset.sample_id(i)`` when
  the dataset defines it, else the index ``i``. The trainer hands this loader to ``accelerator.prepare`` (which
  shards it across processes and skips batches on resume).
- Streaming datasets (:class:`~textmoco.data.streaming.StreamingDataset`, any torch ``IterableDataset`` yielding
  ``(id, item)``): sharded per process here (``split_dataset_by_node``), read in order (or block-shuffled)
  without workers, not prepared by Accelerate (no prefetch: the iterable's ``state_dict()`` is exactly the
  position after the last batch the trainer consumed, and the trainer saves it in each checkpoint).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from .streaming import is_streaming


class ItemsWithIds(Dataset):
    """``ds[i] -> (sample_id, item)``; the sample id is ``dataset.sample_id(i)`` if defined, else ``i``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._sample_id = getattr(dataset, "sample_id", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int):
        sid = index if self._sample_id is None else self._sample_id(index)
        return sid, self.dataset[index]


class IdCollator:
    """(id, sample) pairs -> {"ids": (B,) int64, "inputs": collate(samples)}.

    When ``collate`` takes a ``sample_keys`` argument (e.g. ``TextEncoder.collate``, whose word augmentation draws
    at collate time), it gets one ``(seed, epoch, sample id)`` per sample so that its draws are seeded per sample:
    the DataLoader (and Accelerate, one batch ahead) collates before the step, so draws from the global RNG would
    land in the checkpoint's RNG state and a resumed run would diverge. The epoch comes from :meth:`set_epoch`
    (:func:`set_loader_epoch`, before each epoch's iterator is created, so workers get it too)."""

    def __init__(self, collate: Callable, seed: int = 0):
        self.collate, self.seed, self.epoch = collate, int(seed), 0
        try:
            self._keyed = "sample_keys" in inspect.signature(collate).parameters
        except (TypeError, ValueError):
            self._keyed = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, items):
        ids = [i for i, _ in items]
        samples = [s for _, s in items]
        if self._keyed:
            inputs = self.collate(samples, sample_keys=[(self.seed, self.epoch, int(i)) for i in ids])
        else:
            inputs = self.collate(samples)
        return {"ids": torch.tensor(ids, dtype=torch.long), "inputs": inputs}


def check_dataset_size(num_samples: int, train: Any, world: int = 1) -> None:
    """``ValueError`` when ``drop_last`` would leave no batch at all (recipes call it before loading a model)."""
    if train.drop_last and num_samples < train.batch_size * world:
        raise ValueError(f"the training data has {num_samples} samples, fewer than one batch "
                         f"(batch_size={train.batch_size} x {world} processes); lower batch_size or add data")


def build_train_loader(dataset: Any, collate: Callable, train: Any, world: int = 1, rank: int = 0) -> DataLoader:
    """The training DataLoader for ``dataset`` (map-style or streaming, see the module docstring); batches are
    ``{"ids": (B,), "inputs": collate(items)}``. Raises ``ValueError`` before training for data that cannot
    train: fewer samples than one batch, a streaming run without ``max_steps`` or with workers."""
    if is_streaming(dataset):
        if not train.max_steps:
            raise ValueError("a streaming dataset has no length: pass max_steps (--max_steps)")
        if train.num_workers:
            raise ValueError("a streaming dataset is read without workers (num_workers=0) so that its position "
                             "can be saved exactly; pass --num_workers 0")
        if hasattr(dataset, "shard"):
            dataset = dataset.shard(rank, world)
        # own generator: creating each epoch's iterator draws a base seed, never from the global RNG
        return DataLoader(dataset, batch_size=train.batch_size, drop_last=train.drop_last,
                          collate_fn=IdCollator(collate, train.seed),
                          generator=torch.Generator().manual_seed(train.seed))
    check_dataset_size(len(dataset), train, world)
    return DataLoader(ItemsWithIds(dataset), batch_size=train.batch_size, shuffle=True, drop_last=train.drop_last,
                      num_workers=train.num_workers, collate_fn=IdCollator(collate, train.seed),
                      # own generator: starting an epoch's iterator must not draw from the global RNG,
                      # or a resumed run's dropout/augmentation noise would drift from the uninterrupted one
                      generator=torch.Generator().manual_seed(train.seed))


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """Tell the sampler (Accelerate's ``set_epoch``), the dataset *and* the collator the epoch: Accelerate only
    tells the dataset when the sampler cannot take it; crops and word augmentation are seeded by (seed, epoch,
    sample id)."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    collate = getattr(loader, "collate_fn", None)
    if hasattr(collate, "set_epoch"):
        collate.set_epoch(epoch)
    dataset = getattr(loader, "dataset", None)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def loader_state(loader: Any) -> Any:
    """The streaming position (the iterable's ``state_dict()``), or None for map-style data."""
    dataset = getattr(loader, "dataset", None)
    return dataset.state_dict() if is_streaming(dataset) and hasattr(dataset, "state_dict") else None


def load_loader_state(loader: Any, state: Any) -> None:
    dataset = getattr(loader, "dataset", None)
    if state is not None and is_streaming(dataset) and hasattr(dataset, "load_state_dict"):
        dataset.load_state_dict(state)
