"""Streaming average precision that stays right at low prevalence: exact top tail + binned body.

Binned AP treats a bin as one tie group. When a tag is rare (0.5% of tokens) its positives sit
in the top bin, where precision changes fastest, and a binned AP is off by up to ~0.25.
:class:`TailHistogram` keeps, per unit, the ``tail`` largest activations exactly (value and
tag) and bins only the rest; a token evicted from the tail is added to the bins, so every token
is counted exactly once. AP walks the exact tail (ties grouped, as scikit-learn does) and then
the bins from the top. With ``tail`` at a few times the rare tag's count the AP is exact up to
the bins below the tail, where precision is already flat.

The buffers have a fixed size (``[unit, tail]``, padded with -inf / tag -1), so a shard's
:meth:`~TailHistogram.state_dict` adds into another's with :meth:`~TailHistogram.merge_state`.
Use it only for streaming/sharded runs; in memory, call ``sklearn.metrics.average_precision_score``.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tinyinterp.errors import ConfigError

__all__ = ["TailHistogram"]


class TailHistogram:
    """Per unit: exact top-``tail`` (value, tag) plus per-bin tag counts below it."""

    def __init__(self, edges: Float[Tensor, "unit n_edges"], n_tags: int, tail: int = 2048):
        if tail < 1 or n_tags < 1:
            raise ConfigError(f"TailHistogram needs tail >= 1 and n_tags >= 1 (got {tail}, {n_tags})")
        self.edges = torch.as_tensor(np.asarray(edges) if not isinstance(edges, Tensor) else edges).float().contiguous()
        n_units, dev = self.edges.shape[0], self.edges.device
        self.n_tags, self.tail = n_tags, tail
        self.values = torch.full((n_units, tail), -torch.inf, device=dev)  # [unit, tail], exact; -inf: empty
        self.tags = torch.full((n_units, tail), -1, dtype=torch.long, device=dev)  # -1: empty
        self.counts = torch.zeros((n_units, self.edges.shape[1] + 1, n_tags), dtype=torch.long, device=dev)

    def update(self, x: Float[Tensor, "unit tok"], tags: Int[Tensor, " tok"] | Int[Tensor, "unit tok"]) -> None:
        """Fold in a batch: activations ``[unit, tok]`` and each token's tag (``[tok]``, or per unit ``[unit, tok]``)."""
        dev = self.values.device
        x = torch.as_tensor(x).to(dev, torch.float32)
        t = torch.as_tensor(tags).to(dev, torch.long)
        t = t.expand(x.shape) if t.dim() == 1 else t
        v = torch.cat([self.values, x], 1)
        t = torch.cat([self.tags, t], 1)
        keep = v.topk(self.tail, dim=1).indices  # [unit, tail]
        drop = torch.ones_like(v, dtype=torch.bool).scatter_(1, keep, False)
        dv, dt = v[drop].view(v.shape[0], -1), t[drop].view(v.shape[0], -1)  # every row drops as many
        self.values, self.tags = v.gather(1, keep), t.gather(1, keep)
        ok = dt >= 0
        if ok.any():
            b = torch.searchsorted(self.edges, dv.contiguous(), right=True)  # [unit, dropped]
            unit = torch.arange(v.shape[0], device=dev)[:, None].expand_as(b)
            flat = ((unit * self.counts.shape[1] + b) * self.n_tags + dt)[ok]
            self.counts.view(-1).index_add_(0, flat, torch.ones_like(flat))

    def state_dict(self) -> dict[str, Tensor]:
        """Tail values and tags, bin counts (CPU tensors of fixed shape)."""
        return {"values": self.values.cpu(), "tags": self.tags.cpu(), "counts": self.counts.cpu()}

    def merge_state(self, state: dict[str, Tensor]) -> None:
        """Add the :meth:`state_dict` of a histogram over other (disjoint) tokens with the same edges."""
        self.counts += state["counts"].to(self.counts.device)
        self.update(state["values"], state["tags"])

    def merge(self, other: "TailHistogram") -> "TailHistogram":
        """Histogram of the union of two disjoint token sets (same edges)."""
        if not torch.equal(self.edges, other.edges):
            raise ConfigError("TailHistogram.merge: the two histograms have different bin edges")
        out = TailHistogram(self.edges, self.n_tags, self.tail)
        out.merge_state(self.state_dict())
        out.merge_state(other.state_dict())
        return out

    def average_precision(self) -> Float[np.ndarray, "unit tag"]:
        """AP of every unit for every tag (tag vs all others); NaN where a tag has no token."""
        values, tags, counts = self.values.cpu().numpy(), self.tags.cpu().numpy(), self.counts.cpu().numpy()
        out = np.full((values.shape[0], self.n_tags), np.nan)
        for u in range(values.shape[0]):
            full = tags[u] >= 0
            v, t = values[u][full], tags[u][full]  # already sorted, descending (topk)
            order = np.argsort(-v, kind="stable")
            v, t = v[order], t[order]
            starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]]) if v.size else np.zeros(0, dtype=int)
            onehot = np.zeros((v.size, self.n_tags))
            onehot[np.arange(v.size), t] = 1.0
            groups = np.add.reduceat(onehot, starts, 0) if v.size else np.zeros((0, self.n_tags))
            groups = np.concatenate([groups, counts[u][::-1].astype(np.float64)], 0)  # tail, then bins top-down
            groups = groups[groups.sum(1) > 0]
            tp = np.cumsum(groups, 0)  # [group, tag] positives at or above each group
            seen = np.cumsum(groups.sum(1))[:, None]
            total = tp[-1] if len(tp) else np.zeros(self.n_tags)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[u] = (groups * (tp / seen)).sum(0) / total  # precision at each group x recall gained there
        return out
