"""The CPU side of the text encoder: sentences (or pairs / crops of them) -> token tensors, with the optional
word-level augmentation.

Views (SimCSE-style): by default ``TextCollator`` tokenizes each sentence once and the two forward passes differ
only by dropout. With ``token_augment="repeat"`` or ``"delete"`` each view gets its own light word-level
augmentation (each word repeated / deleted with probability ``augment_rate``; a sentence never loses all its words)
and two tokenizations are returned. In training, each sample's augmentation is drawn from its own generator seeded
by (seed, epoch, sample id, view) - the trainer's collator passes ``sample_keys`` - so it depends neither on the
batch-mates nor on the global RNG, and a resumed run draws exactly what the uninterrupted one drew (Accelerate
fetches one batch ahead: collate-time draws from the global RNG would already be inside the saved RNG state).
Called without keys, the collator draws from torch's global RNG.

Shapes: B = batch, T = tokens (padded to the longest in the batch, at most ``max_length``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch

if TYPE_CHECKING:
    import numpy as np

TOKEN_AUGMENTS = (None, "repeat", "delete")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what the encoder's forward takes
_AUGMENT_SALT = 0x7E47  # keeps the word-augmentation streams apart from the crops' (seed, epoch, id) streams


def augment_generator(key: Sequence[int], view: int) -> "np.random.Generator":
    """The generator of one sample's word augmentation in one view: ``key`` = (seed, epoch, sample id)."""
    import numpy as np

    return np.random.default_rng([_AUGMENT_SALT, view] + [int(k) % (1 << 64) for k in key])


def augment_words(sentence: str, mode: str, rate: float, rng: Any = None) -> str:
    """Word-level augmentation of one sentence. ``"repeat"``: each word is doubled with probability ``rate``
    (ESimCSE-like); ``"delete"``: each word is dropped with probability ``rate``, at least one word kept.
    ``rng``: a ``numpy.random.Generator`` to draw from (default: torch's global RNG)."""
    words = sentence.split()
    if not words or rate <= 0:
        return sentence
    if mode not in ("repeat", "delete"):
        raise ValueError(f"unknown token_augment {mode!r}; use one of {TOKEN_AUGMENTS}")
    hit = (rng.random(len(words)) < rate).tolist() if rng is not None else (torch.rand(len(words)) < rate).tolist()
    if mode == "repeat":
        out = [w for w, h in zip(words, hit) for w in ((w, w) if h else (w,))]
    else:
        out = [w for w, h in zip(words, hit) if not h]
        if not out:
            pick = int(rng.integers(len(words))) if rng is not None else int(torch.randint(len(words), (1,)))
            out = [words[pick]]
    return " ".join(out)


class TextCollator:
    """The CPU side of :class:`TextEncoder`: list of B sentences -> token tensors (picklable, no model inside, so
    it is cheap to send to DataLoader workers).

    Returns ``{"input_ids": (B, T), "attention_mask": (B, T)[, "token_type_ids": (B, T)]}`` without
    augmentation, or a tuple of two such dicts (view a, view b) with augmentation.
    """

    def __init__(self, tokenizer: Any, max_length: int, token_augment: Optional[str] = None,
                 augment_rate: float = 0.1):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.token_augment = token_augment
        self.augment_rate = augment_rate

    def tokenize(self, sentences: Sequence[str], max_length: Optional[int] = None) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(sentences), padding=True, truncation=True,
                             max_length=max_length or self.max_length, return_tensors="pt")
        return {k: enc[k] for k in MODEL_INPUTS if k in enc}

    def _augment(self, samples: Sequence[str], view: int, sample_keys: Optional[Sequence[Sequence[int]]]) -> list:
        """View ``view`` (0/1) of each sentence; with ``sample_keys`` ((seed, epoch, id) per sample) each draws from
        its own generator, else from the global RNG."""
        if sample_keys is None:
            return [augment_words(s, self.token_augment, self.augment_rate) for s in samples]
        if len(sample_keys) != len(samples):
            raise ValueError(f"{len(sample_keys)} sample keys for {len(samples)} samples")
        return [augment_words(s, self.token_augment, self.augment_rate, augment_generator(k, view))
                for s, k in zip(samples, sample_keys)]

    def __call__(self, samples: Sequence[str], sample_keys: Optional[Sequence[Sequence[int]]] = None) -> Any:
        """``sample_keys``: optional (seed, epoch, sample id) per sample, which seeds its word augmentation."""
        samples = list(samples)
        if samples and all(isinstance(s, tuple) for s in samples):
            return self.collate_tuples(samples, sample_keys)
        bad = next((s for s in samples if not isinstance(s, str)), None)
        if bad is not None or not samples:
            raise TypeError("TextEncoder.collate expects a non-empty list of str, got "
                            f"{type(bad).__name__ if samples else 'an empty list'}; use SentenceDataset (the core "
                            "adds the sample ids itself)")
        if self.token_augment is None:
            return self.tokenize(samples)
        return (self.tokenize(self._augment(samples, 0, sample_keys)),
                self.tokenize(self._augment(samples, 1, sample_keys)))

    def collate_tuples(self, samples: Sequence[tuple], sample_keys: Optional[Sequence[Sequence[int]]] = None) -> tuple:
        """Items with two texts (pairs, crops: view a, view b) -> ``(tokens_a, tokens_b)``; with a third element
        (a tuple of M explicit negatives per row) -> ``(tokens_a, tokens_b, tokens_neg)``, tokens_neg (B*M, T)
        row-major. Each view is tokenized on its own (``token_augment``, if set, applies to view a and b)."""
        widths = {len(s) for s in samples}
        if widths not in ({2}, {3}):
            raise TypeError(f"TextEncoder.collate got tuples of {sorted(widths)} elements; expected (view_a, view_b) "
                            "or (anchor, positive, negatives) for every item of the batch")
        for column in (0, 1):
            bad = next((s[column] for s in samples if not isinstance(s[column], str)), None)
            if bad is not None:
                raise TypeError("TextEncoder.collate expects a non-empty list of str (or of (view_a, view_b[, "
                                f"negatives]) tuples of str), got a tuple whose element {column} is "
                                f"{type(bad).__name__}; use SentenceDataset / PairDataset (the core adds the sample "
                                "ids itself)")
        if self.token_augment:
            views = [self._augment([s[column] for s in samples], column, sample_keys) for column in (0, 1)]
        else:
            views = [[s[column] for s in samples] for column in (0, 1)]
        out = (self.tokenize(views[0]), self.tokenize(views[1]))
        if widths == {3}:
            negatives = [n for s in samples for n in (s[2] if isinstance(s[2], (tuple, list)) else (s[2],))]
            if len(negatives) % len(samples):
                raise TypeError("TextEncoder.collate: every item needs the same number of negatives")
            out = out + (self.tokenize(negatives),)
        return out
