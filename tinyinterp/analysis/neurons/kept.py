"""The analysed tokens' activations a neuron job keeps for the exact decision, filled in place.

:class:`KeptActivations` allocates one ``[token, unit]`` float32 array for an upper bound of
the analysed tokens (``np.empty``: pages are only committed as rows are written) and one array
per label, fills them batch by batch, and hands out views of the filled rows
(:meth:`KeptActivations.unit_activations`): no list of per-batch parts and no concatenated
copy, so the peak is the kept activations once (4 bytes x tokens x units), not twice. When
the bound is exceeded (it should not be: it counts every labelled token before the ``n_ctx``
cut) the arrays grow, at the cost of one copy.
"""

from __future__ import annotations

import numpy as np

from tinyinterp.analysis.neurons.units import UnitActivations

__all__ = ["KeptActivations"]

_LABELS = {"tags": np.int64, "words": np.int64, "tok": np.int64, "story": np.int64, "pos": np.int64, "sel": bool}


class KeptActivations:
    """Activations ``[token, unit]`` and labels of the analysed tokens, in pass order."""

    def __init__(self, max_tokens: int, n_units: int):
        self.n, self.n_units = 0, n_units
        self.acts = np.empty((max(max_tokens, 1), n_units), dtype=np.float32)
        self.labels = {k: np.empty(max(max_tokens, 1), dtype=t) for k, t in _LABELS.items()}

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * len(self.acts))
        acts = np.empty((cap, self.n_units), dtype=np.float32)
        acts[: self.n] = self.acts[: self.n]
        self.acts = acts
        for k, v in self.labels.items():
            new = np.empty(cap, dtype=v.dtype)
            new[: self.n] = v[: self.n]
            self.labels[k] = new

    def add(self, acts: np.ndarray, tags, words, tok, story, pos, selection: bool) -> None:
        """Append one batch: ``acts [tok, unit]`` (any float dtype) and per-token labels (``pos``: position in
        the story, which the examples need)."""
        m = len(acts)
        if self.n + m > len(self.acts):
            self._grow(self.n + m)
        self.acts[self.n:self.n + m] = acts
        self._labels(m, tags, words, tok, story, pos, selection)

    def add_gathered(self, layers: list, flat, tags, words, tok, story, pos, selection: bool) -> None:
        """Append one batch straight from the hooked activations: ``layers`` are ``[batch, pos, d]`` tensors (one per
        analysed layer, side by side as units), ``flat`` the analysed tokens' ``batch * n_pos + pos`` (int64 tensor);
        gathered into the kept rows without an intermediate copy when they are float32 on the CPU."""
        import torch

        m = len(flat)
        if self.n + m > len(self.acts):
            self._grow(self.n + m)
        dst = torch.from_numpy(self.acts[self.n:self.n + m])  # [m, unit], contiguous
        d0 = 0
        for act in layers:
            d = act.shape[-1]
            src = act.reshape(-1, d)
            if len(layers) == 1 and src.dtype == torch.float32 and src.device.type == "cpu":
                torch.index_select(src, 0, flat, out=dst)
            else:
                dst[:, d0:d0 + d] = src[flat.to(src.device)].float().cpu()
            d0 += d
        self._labels(m, tags, words, tok, story, pos, selection)

    def _labels(self, m: int, tags, words, tok, story, pos, selection: bool) -> None:
        rows = slice(self.n, self.n + m)
        lab = self.labels
        lab["tags"][rows], lab["words"][rows], lab["tok"][rows], lab["story"][rows] = tags, words, tok, story
        lab["pos"][rows] = pos
        lab["sel"][rows] = selection
        self.n += m

    def positions(self) -> np.ndarray:
        """Each filled row's position in its story."""
        return self.labels["pos"][: self.n]

    def __len__(self) -> int:
        return self.n

    def unit_activations(self, **names) -> UnitActivations:
        """Views of the filled rows as :class:`UnitActivations` (``names``: tag/word/unit names and unit meta)."""
        n, lab = self.n, self.labels
        return UnitActivations(acts=self.acts[:n], tags=lab["tags"][:n], token_ids=lab["tok"][:n], words=lab["words"][:n],
                               story=lab["story"][:n], selection=lab["sel"][:n], **names)
