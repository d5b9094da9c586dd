"""Deterministic, resumable batches of token windows from prepared shards.

The token stream of each shard is cut into windows of ``n_ctx + 1`` tokens (inputs and
next-token targets). Each epoch shifts the cut points by an epoch-specific offset, so
repeated epochs see different window boundaries, and visits windows in an order drawn
from ``seed`` and the epoch. Everything is a pure function of ``(seed, samples consumed)``:
resuming at step ``k`` reproduces exactly the batches an uninterrupted run would see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class WindowSampler:
    shards: list[np.ndarray]
    n_ctx: int
    seed: int = 0

    def __post_init__(self):
        self._epoch_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if self.windows_in_epoch(0) == 0:
            from tinyinterp.errors import DataError

            raise DataError(
                f"training split has {sum(len(s) for s in self.shards)} tokens, fewer than one window of n_ctx+1={self.n_ctx + 1}; "
                "add more text or lower n_ctx"
            )

    def _shift(self, epoch: int) -> int:
        return 0 if epoch == 0 else int(np.random.default_rng([self.seed, epoch, 7]).integers(self.n_ctx))

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, start offset) of every window of ``epoch``, in visiting order."""
        if epoch not in self._epoch_cache:
            shift = self._shift(epoch)
            shard_idx, starts = [], []
            for i, s in enumerate(self.shards):
                n = max(0, (len(s) - 1 - shift) // self.n_ctx)
                shard_idx.append(np.full(n, i, dtype=np.int64))
                starts.append(shift + self.n_ctx * np.arange(n, dtype=np.int64))
            si, st = np.concatenate(shard_idx), np.concatenate(starts)
            order = np.random.default_rng([self.seed, epoch]).permutation(len(si))
            self._epoch_cache = {epoch: (si[order], st[order])}  # keep one epoch in memory
        return self._epoch_cache[epoch]

    def windows_in_epoch(self, epoch: int) -> int:
        shift = self._shift(epoch)
        return sum(max(0, (len(s) - 1 - shift) // self.n_ctx) for s in self.shards)

    def locate(self, position: int) -> tuple[int, int]:
        """Map a global sample position to (epoch, index within epoch)."""
        epoch = 0
        while position >= (n := self.windows_in_epoch(epoch)):
            position -= n
            epoch += 1
        return epoch, position

    def batch(self, position: int, size: int) -> torch.Tensor:
        """``size`` windows starting at global sample ``position``: int64 ``[size, n_ctx + 1]``."""
        out = np.empty((size, self.n_ctx + 1), dtype=np.int64)
        epoch, idx = self.locate(position)
        for row in range(size):
            si, st = self._epoch(epoch)
            if idx >= len(si):
                epoch, idx = epoch + 1, 0
                si, st = self._epoch(epoch)
            shard = self.shards[si[idx]]
            out[row] = shard[st[idx] : st[idx] + self.n_ctx + 1]
            idx += 1
        return torch.from_numpy(out)

    def epoch_of(self, position: int) -> float:
        epoch, idx = self.locate(position)
        return epoch + idx / max(1, self.windows_in_epoch(epoch))


def eval_windows(shards: list[np.ndarray], n_ctx: int, max_tokens: int | None = None) -> torch.Tensor:
    """Non-overlapping ``[n, n_ctx + 1]`` windows (stride ``n_ctx``) over the stream, in order.

    Every token after the first is predicted exactly once; the last partial window is
    padded with -1 (ignored in the loss).
    """
    stream = np.concatenate([np.asarray(s, dtype=np.int64) for s in shards]) if shards else np.zeros(0, np.int64)
    if max_tokens is not None:
        stream = stream[: max_tokens + 1]
    if len(stream) < 2:
        return torch.zeros((0, n_ctx + 1), dtype=torch.long)
    n = -(-(len(stream) - 1) // n_ctx)
    out = np.full((n, n_ctx + 1), -1, dtype=np.int64)
    for i in range(n):
        piece = stream[i * n_ctx : i * n_ctx + n_ctx + 1]
        out[i, : len(piece)] = piece
    return torch.from_numpy(out)
