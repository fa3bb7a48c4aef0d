"""NegativeQueue: a ring buffer of past keys, their sample ids and a filled mask.

Any size K and any batch size: writes wrap around, a batch larger than K keeps its last K keys, nothing asserts
``K % B == 0``. Unfilled slots are flagged and never act as negatives. ``enqueue`` all-gathers keys and ids from every
process first, so all processes hold the identical queue. The queue is a plain object (not an ``nn.Module`` buffer)
so DDP never broadcasts over it; the trainer registers it for checkpointing via ``state_dict``/``load_state_dict``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .distributed import gather_no_grad

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class NegativeQueue:
    """keys (K, D) L2-normalised, ids (K,) int64 (-1 = empty), filled (K,) bool, ptr: next slot to write."""

    def __init__(self, size: int, dim: int, dtype: str = "float32", device: torch.device | str = "cpu"):
        if int(size) != size or size <= 0:
            raise ValueError(f"queue_size={size!r} is invalid: queue_size must be an integer > 0")
        if dtype not in _DTYPES:
            raise ValueError(f"queue_dtype={dtype!r} is invalid: queue_dtype must be one of {sorted(_DTYPES)}")
        self.size, self.dim, self.dtype_name = int(size), int(dim), dtype
        self.keys = torch.zeros(self.size, self.dim, dtype=_DTYPES[dtype], device=device)
        self.ids = torch.full((self.size,), -1, dtype=torch.long, device=device)
        self.filled = torch.zeros(self.size, dtype=torch.bool, device=device)
        self.ptr = 0
        self.num_enqueued = 0  # total keys ever written (so "full once" survives resume)

    # ------------------------------------------------------------------ state
    @property
    def device(self) -> torch.device:
        return self.keys.device

    def to(self, device: torch.device | str) -> "NegativeQueue":
        self.keys, self.ids, self.filled = self.keys.to(device), self.ids.to(device), self.filled.to(device)
        return self

    @property
    def num_filled(self) -> int:
        return min(self.num_enqueued, self.size)

    @property
    def is_full(self) -> bool:
        return self.num_enqueued >= self.size

    @property
    def memory_bytes(self) -> int:
        """Bytes of the key storage, K * D * bytes-per-element (ids and mask add K * 9)."""
        return self.keys.numel() * self.keys.element_size()

    def state_dict(self) -> dict:
        return {"keys": self.keys.cpu().clone(), "ids": self.ids.cpu().clone(), "filled": self.filled.cpu().clone(),
                "ptr": self.ptr, "num_enqueued": self.num_enqueued, "dtype": self.dtype_name}

    def storage_tensors(self) -> dict:
        """``{"keys" (K, D) float32, "ids" (K,), "filled" (K,)}`` on CPU, contiguous: what a safetensors file holds
        (``ptr`` / ``num_enqueued`` are saved beside it; :meth:`load_state_dict` takes all five back)."""
        q = self.state_dict()
        return {"keys": q["keys"].float().contiguous(), "ids": q["ids"], "filled": q["filled"]}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["keys"].shape) != (self.size, self.dim):
            raise ValueError(f"checkpoint queue has shape {tuple(state['keys'].shape)} but this run uses "
                             f"queue_size={self.size}, dim={self.dim}; resume with the same queue_size")
        device = self.device
        self.keys = state["keys"].to(device=device, dtype=self.keys.dtype, copy=True)
        self.ids = state["ids"].to(device, copy=True)
        self.filled = state["filled"].to(device, copy=True)
        self.ptr, self.num_enqueued = int(state["ptr"]), int(state["num_enqueued"])

    # ------------------------------------------------------------------ use
    def negatives(self) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(keys (K, D), ids (K,), filled (K,) bool or None once every slot is filled - the loss then needs no
        device read to count them). Keys keep the storage dtype; cast at the matmul."""
        return self.keys, self.ids, None if self.is_full else self.filled

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor, gather: bool = True,
                all_finite: Optional[bool] = None) -> None:
        """Write (b, D) keys and (b,) ids from this process; with ``gather`` those of all processes (rank order).

        Keys are re-normalised and detached. Rows that are not finite are dropped (a NaN never enters the queue).
        ``all_finite=True``: the caller has already checked every (gathered) row on the host, so the check and its
        device read are skipped (the trainer folds it into its one read per step on a single process).
        """
        keys = keys.detach().float()
        ids = ids.detach().long().to(keys.device)
        if gather:
            keys, ids = gather_no_grad(keys), gather_no_grad(ids)
        finite = torch.isfinite(keys).all(dim=1)
        if not all_finite and not bool(finite.all()):
            keys, ids = keys[finite], ids[finite]
        n = keys.shape[0]
        if n == 0:
            return
        if n > self.size:  # keep the newest K
            keys, ids = keys[-self.size:], ids[-self.size:]
            self.ptr = (self.ptr + n - self.size) % self.size
            self.num_enqueued += n - self.size
            n = self.size
        slots = (self.ptr + torch.arange(n, device=self.device)) % self.size
        self.keys[slots] = F.normalize(keys, dim=1).to(device=self.device, dtype=self.keys.dtype)
        self.ids[slots] = ids.to(self.device)
        self.filled[slots] = True
        self.ptr = (self.ptr + n) % self.size
        self.num_enqueued += n

    def __repr__(self) -> str:
        return (f"NegativeQueue(size={self.size}, dim={self.dim}, dtype={self.dtype_name}, "
                f"filled={self.num_filled}, ptr={self.ptr})")
