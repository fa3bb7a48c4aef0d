"""A recipe's training data from the user's own files or ``datasets`` datasets: map-style or streamed (corpora
larger than memory), as pairs or as documents to crop. The retrieval recipe's ``--train_file`` / ``--dataset``
(``--streaming``) come here; the wiki-vital default does not.

- Pairs: :class:`~textmoco.data.retrieval.PairDataset` (``anchor`` / ``positive`` columns, optional ``negative``
  / ``negative_N``, optional ``id``), or :class:`~textmoco.data.retrieval.StreamingDataset` with the same columns.
- Crops: :class:`~textmoco.data.retrieval.CropDataset` over the documents (``.txt`` one a line, or the
  ``text_column`` of csv/tsv/jsonl/a dataset), or a crop-drawing ``StreamingDataset``.

Every problem (both sources, a missing column, an empty text, a short document) is a ``ValueError`` before training.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from .retrieval import CropDataset, PairDataset
from .streaming import StreamingDataset
from .text import _check_file, read_sentences

# datasets' builder and its options for a streamed file, by suffix
STREAM_BUILDERS = {".jsonl": ("json", {}), ".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t"}),
                   ".txt": ("text", {})}


def load_hf_dataset(name: str, split: str = "train", config: Optional[str] = None, *, streaming: bool = False,
                    **load_kwargs: Any):
    """``datasets.load_dataset(name, config, split=split, streaming=streaming, **load_kwargs)`` with one clear
    ``ValueError`` for a missing split, an unknown or unreachable dataset, or a result with several splits."""
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=streaming, **load_kwargs)
    except ValueError as e:
        if "split" in str(e).lower():
            raise ValueError(f"dataset {name!r} has no split {split!r} ({e}); pass split= with an existing one") from e
        raise ValueError(f"could not load dataset {name!r} (config={config!r}): {e}") from e
    except (OSError, FileNotFoundError, ConnectionError) as e:
        raise ValueError(f"could not load dataset {name!r} (config={config!r}): not found locally and the Hub "
                         f"is unreachable or has no such dataset ({type(e).__name__}: {e}); pass a local "
                         "file/directory or connect") from e
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        raise ValueError(f"dataset {name!r} returned several splits {list(ds)}; pass split= naming one")
    return ds


def stream_file(path: str | os.PathLike):
    """A local .jsonl / .csv / .tsv / .txt file as a ``datasets.IterableDataset`` (read lazily, in order; a .txt
    file's lines are the column ``text``)."""
    p = _check_file(path, ".jsonl/.csv/.tsv/.txt")
    builder, options = STREAM_BUILDERS.get(p.suffix.lower(), (None, None))
    if builder is None:
        raise ValueError(f"unsupported file type {p.suffix!r} for {str(p)!r}; use one of {list(STREAM_BUILDERS)}")
    return load_hf_dataset(builder, "train", data_files=str(p), streaming=True, **options)


def retrieval_training_data(mode: str, *, train_file: Optional[str] = None, dataset: Optional[str] = None,
                            dataset_config: Optional[str] = None, dataset_split: str = "train",
                            streaming: bool = False, text_column: Optional[str] = None,
                            anchor_column: str = "anchor", positive_column: str = "positive",
                            id_column: Optional[str] = None, crop: Optional[dict] = None, seed: int = 0,
                            shuffle_block: int = 0):
    """``mode`` 'pairs' or 'crops' from exactly one of ``train_file`` / ``dataset`` (a Hub id, local dataset
    directory or builder name). ``crop``: CropDataset's options (ratio_min, ratio_max, min_length, delete_rate).
    ``id_column``: sample ids (default: a pairs file's ``id`` column if it has one, renumbered 0..n-1 by first
    appearance, else the row; streamed: a hash of the text). ``text_column``: the documents' column (crops;
    default ``text`` when streaming). ``shuffle_block``: streamed data only, 0 = in order, N = shuffled N at a time
    (:mod:`textmoco.data.streaming`)."""
    if mode not in ("pairs", "crops"):
        raise ValueError(f"mode={mode!r} is invalid: use 'pairs' or 'crops'")
    if bool(train_file) == bool(dataset):
        raise ValueError("pass exactly one of --train_file and --dataset")
    crop = dict(crop or {})
    if shuffle_block and not streaming:
        raise ValueError(f"shuffle_block={shuffle_block} is for streamed data (--streaming); data read into memory "
                         "is shuffled whole every epoch")
    if streaming:
        ds = stream_file(train_file) if train_file else load_hf_dataset(dataset, dataset_split, dataset_config,
                                                                         streaming=True)
        if mode == "pairs":
            return StreamingDataset(ds, anchor_column=anchor_column, positive_column=positive_column,
                                    id_column=id_column, seed=seed, shuffle_block=shuffle_block)
        return StreamingDataset(ds, text_column or "text", id_column=id_column, crop=crop, seed=seed,
                                shuffle_block=shuffle_block)
    if mode == "pairs":
        columns = dict(anchor_column=anchor_column, positive_column=positive_column, id_column=id_column or "id")
        pairs = PairDataset.from_file(train_file, **columns) if train_file else PairDataset.from_dataset(
            load_hf_dataset(dataset, dataset_split, dataset_config),
            source=f"dataset {dataset!r} (split {dataset_split!r})", **columns)
        if pairs.ids is not None:  # renumbered 0..n-1 in order of appearance: same groups, and a guide table fits
            index: dict[int, int] = {}
            pairs.ids = [index.setdefault(i, len(index)) for i in pairs.ids]
        return pairs
    if train_file:
        docs = read_sentences(train_file, text_column)
    else:  # a missing text_column: load_dataset_sentences names the dataset's columns
        from .text import load_dataset_sentences

        docs = load_dataset_sentences(dataset, text_column, dataset_split, dataset_config)
    return CropDataset(docs, seed=seed, **crop)


def describe_source(train_file: Optional[str], dataset: Optional[str]) -> str:
    """A short name of the training data for the model card's title."""
    return Path(train_file).name if train_file else (Path(dataset).name if os.path.isdir(dataset) else str(dataset))
