"""Streaming average precision that stays right at low prevalence: exact top tail + binned body.

Binned AP treats a bin as one tie group. When a tag is rare (0.5% of tokens) its positives sit
in the top bin, where precision changes fastest, and a binned AP is off by up to ~0.25.
:class:`TailHistogram` keeps, per unit, the ``tail`` largest activations exactly (value and
tag) and bins only the rest; a token evicted from the tail is added to the bins, so every token
is counted exactly once. AP walks the exact tail (ties grouped, as scikit-learn does) and then
the bins from the top. With ``tail`` at a few times the rare tag's count the AP is exact up to
the bins below the tail, where precision is already flat.

Use it only for streaming/sharded runs; in memory, call ``sklearn.metrics.average_precision_score``.
Two histograms over disjoint data :meth:`~TailHistogram.merge`.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int

from tinyinterp.errors import ConfigError

__all__ = ["TailHistogram"]


class TailHistogram:
    """Per unit: exact top-``tail`` (value, tag) plus per-bin tag counts below it."""

    def __init__(self, edges: Float[np.ndarray, "unit n_edges"], n_tags: int, tail: int = 2048):
        if tail < 1 or n_tags < 1:
            raise ConfigError(f"TailHistogram needs tail >= 1 and n_tags >= 1 (got {tail}, {n_tags})")
        self.edges = np.asarray(edges, dtype=np.float64)
        n_units = self.edges.shape[0]
        self.n_tags, self.tail = n_tags, tail
        self.values = np.full((n_units, 0), -np.inf)  # [unit, <= tail], exact
        self.tags = np.zeros((n_units, 0), dtype=np.int64)
        self.counts = np.zeros((n_units, self.edges.shape[1] + 1, n_tags), dtype=np.int64)  # [unit, bin, tag]

    def _bin(self, values: np.ndarray, tags: np.ndarray) -> None:
        for u in range(values.shape[0]):  # evicted / overflow tokens go to the bins
            b = np.searchsorted(self.edges[u], values[u], side="right")
            np.add.at(self.counts[u], (b, tags[u]), 1)

    def update(self, x: Float[np.ndarray, "unit tok"], tags: Int[np.ndarray, " tok"]) -> None:
        """Fold in a batch: activations ``[unit, tok]`` and each token's tag."""
        v = np.concatenate([self.values, np.asarray(x, dtype=np.float64)], 1)
        t = np.concatenate([self.tags, np.broadcast_to(np.asarray(tags, dtype=np.int64), x.shape)], 1)
        if v.shape[1] <= self.tail:
            self.values, self.tags = v, t
            return
        order = np.argsort(-v, axis=1, kind="stable")
        keep, drop = order[:, : self.tail], order[:, self.tail:]
        self._bin(np.take_along_axis(v, drop, 1), np.take_along_axis(t, drop, 1))
        self.values, self.tags = np.take_along_axis(v, keep, 1), np.take_along_axis(t, keep, 1)

    def merge(self, other: "TailHistogram") -> "TailHistogram":
        """Histogram of the union of two disjoint token sets (same edges)."""
        if not np.array_equal(self.edges, other.edges):
            raise ConfigError("TailHistogram.merge: the two histograms have different bin edges")
        out = TailHistogram(self.edges, self.n_tags, self.tail)
        out.counts = self.counts + other.counts
        out.update(np.concatenate([self.values, other.values], 1), np.concatenate([self.tags, other.tags], 1))
        return out

    def average_precision(self) -> Float[np.ndarray, "unit tag"]:
        """AP of every unit for every tag (tag vs all others); NaN where a tag has no token."""
        n_units = self.edges.shape[0]
        out = np.full((n_units, self.n_tags), np.nan)
        for u in range(n_units):
            v, t = self.values[u], self.tags[u]
            order = np.argsort(-v, kind="stable")
            v, t = v[order], t[order]
            starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]]) if v.size else np.zeros(0, dtype=int)
            onehot = np.zeros((v.size, self.n_tags))
            onehot[np.arange(v.size), t] = 1.0
            groups = np.add.reduceat(onehot, starts, 0) if v.size else np.zeros((0, self.n_tags))
            groups = np.concatenate([groups, self.counts[u][::-1].astype(np.float64)], 0)  # tail, then bins top-down
            groups = groups[groups.sum(1) > 0]
            tp = np.cumsum(groups, 0)  # [group, tag] positives at or above each group
            seen = np.cumsum(groups.sum(1))[:, None]
            total = tp[-1] if len(tp) else np.zeros(self.n_tags)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[u] = (groups * (tp / seen)).sum(0) / total  # precision at each group x recall gained there
        return out
