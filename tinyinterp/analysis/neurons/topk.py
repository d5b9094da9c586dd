"""The ``k`` largest activations per unit, with story and position, in fixed memory (mergeable across shards)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tinyinterp.errors import ConfigError


class TopKBuffer:
    """The ``k`` largest values seen per unit, with story index and position; fixed size, mergeable."""

    def __init__(self, n_units: int, k: int, device: str | torch.device = "cpu"):
        if k < 1 or n_units < 1:
            raise ConfigError(f"TopKBuffer needs k >= 1 and n_units >= 1 (got k={k}, n_units={n_units})")
        self.k = k
        self.values = torch.full((n_units, k), -torch.inf, device=device)  # float32 [unit, k], descending
        self.story = torch.full((n_units, k), -1, dtype=torch.long, device=device)  # [unit, k]; -1: empty
        self.pos = torch.full((n_units, k), -1, dtype=torch.long, device=device)  # [unit, k]

    def _absorb(self, values: Tensor, story: Tensor, pos: Tensor) -> None:
        """Keep the top k of the current buffer plus candidates ``values`` [unit, m] (story/pos alike).

        Ties are broken by (story, position), smallest first, so the buffer does not depend on the
        order stories arrive in (equal activations are common: every story opening "Once upon a time").
        """
        v = torch.cat([self.values, values.float()], 1)
        s = torch.cat([self.story, story], 1)
        p = torch.cat([self.pos, pos], 1)
        by_place = torch.argsort(s * (int(p.max()) + 2) + p, dim=1, stable=True)
        by_value = torch.argsort(v.gather(1, by_place), dim=1, descending=True, stable=True)[:, : self.k]
        i = by_place.gather(1, by_value)
        self.values, self.story, self.pos = v.gather(1, i), s.gather(1, i), p.gather(1, i)

    def update(self, acts: Float[Tensor, "tok unit"], story: Int[Tensor, " tok"], pos: Int[Tensor, " tok"]) -> None:
        """Fold in one batch of token activations (one row per token)."""
        self.update_units(acts.T, story, pos)

    def update_units(self, x: Float[Tensor, "unit tok"], story: Int[Tensor, " tok"], pos: Int[Tensor, " tok"]) -> None:
        """:meth:`update` with activations as ``[unit, tok]`` (fastest when contiguous)."""
        if x.shape[1] == 0:
            return
        m = min(self.k, x.shape[1])
        v, i = x.topk(m, dim=1)  # [unit, m]
        ties = int((x >= v[:, -1:]).sum(1).max())  # values equal to a unit's m-th largest all compete
        if ties > m:
            v, i = x.topk(ties, dim=1)
        self._absorb(v, story.to(i.device)[i], pos.to(i.device)[i])

    def merge(self, other: "TopKBuffer") -> "TopKBuffer":
        """Top k of the union of two buffers over disjoint data (e.g. two shards of a corpus)."""
        if other.values.shape[0] != self.values.shape[0]:
            raise ConfigError("cannot merge TopKBuffers over different numbers of units")
        out = TopKBuffer(self.values.shape[0], max(self.k, other.k), self.values.device)
        out._absorb(self.values, self.story, self.pos)
        out._absorb(other.values.to(out.values.device), other.story.to(out.values.device), other.pos.to(out.values.device))
        return out

    def to_dict(self) -> dict:
        return {"k": self.k, "values": self.values.cpu().tolist(), "story": self.story.cpu().tolist(),
                "pos": self.pos.cpu().tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "TopKBuffer":
        values = torch.tensor(d["values"], dtype=torch.float32)
        buf = cls(values.shape[0], int(d["k"]))
        buf.values, buf.story, buf.pos = values, torch.tensor(d["story"]), torch.tensor(d["pos"])
        return buf
