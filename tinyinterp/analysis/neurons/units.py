"""Unit activations with their token labels: the one input the identity rules read.

A *unit* is anything with one activation per token: an MLP neuron today, a sparse-autoencoder
feature tomorrow. :class:`UnitActivations` holds ``acts[token, unit]`` for the analysed tokens
of a corpus together with each token's tag, token id, word type and story, and which half of
the stories it belongs to (select on one, report on the other). Everything in
:mod:`~tinyinterp.analysis.neurons.identity` and :mod:`~tinyinterp.analysis.neurons.baselines`
works on this object only, so SAE features go through the same rules by building one (see
:func:`from_arrays`); for MLP neurons the neuron analysis builds it during its pass
(:func:`~tinyinterp.analysis.neurons.job.neuron_activations`).

Two partitions are fixed here, before any activation is looked at:

* **stories** into a selection and a held-out half (``TaggedCorpus.split_indices``);
* **token ids** into two folds by a seeded hash of the id (:meth:`UnitActivations.id_fold`):
  a unit selected on the selection half's fold-``f`` ids is tested on the held-out half's
  other-fold ids, i.e. on tokens it was never chosen on and that a token-id lookup fit on the
  selection fold has never seen. (Folding lower-cased word types instead leaks identity: "One"
  and " one" are different ids, and a word's first token can start other words too.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from jaxtyping import Bool, Float, Int

from tinyinterp.errors import ConfigError, DataError

__all__ = ["UnitActivations", "from_arrays"]


@dataclass
class UnitActivations:
    """Activations of units on analysed tokens, with the labels the identity rules need."""

    acts: Float[np.ndarray, "token unit"]
    tags: Int[np.ndarray, " token"]  # index into tag_names
    token_ids: Int[np.ndarray, " token"]  # the model's token id (lookup and embedding baselines)
    words: Int[np.ndarray, " token"]  # index into word_names (lower-cased word type)
    story: Int[np.ndarray, " token"]  # story index (bootstrap cluster)
    selection: Bool[np.ndarray, " token"]  # True: selection half (whole stories)
    tag_names: list[str]
    word_names: list[str]
    unit_names: list[str] = field(default_factory=list)  # e.g. "L0.N52" or "sae.F17"
    unit_meta: dict[str, np.ndarray] = field(default_factory=dict)  # per-unit arrays, e.g. {"layer": ...}

    def __post_init__(self) -> None:
        n = self.acts.shape[0]
        if self.acts.ndim != 2:
            raise ConfigError(f"UnitActivations.acts must be [token, unit]; got shape {self.acts.shape}")
        for name in ("tags", "token_ids", "words", "story", "selection"):
            a = np.asarray(getattr(self, name))
            if a.shape != (n,):
                raise ConfigError(f"UnitActivations.{name} has shape {a.shape}; expected ({n},) like acts' rows")
            setattr(self, name, a)
        if n and (self.tags.min() < 0 or self.tags.max() >= len(self.tag_names)):
            raise ConfigError("UnitActivations.tags: ids must index tag_names (drop excluded tokens first)")
        if n and (self.words.min() < 0 or self.words.max() >= len(self.word_names)):
            raise ConfigError("UnitActivations.words: ids must index word_names")
        if not self.unit_names:
            self.unit_names = [str(i) for i in range(self.acts.shape[1])]
        if len(self.unit_names) != self.acts.shape[1]:
            raise ConfigError(f"UnitActivations.unit_names has {len(self.unit_names)} names for {self.acts.shape[1]} units")
        if not self.selection.any() or self.selection.all():
            raise DataError("UnitActivations.selection: both halves need tokens (select on one, report on the other)")
        shared = np.intersect1d(np.unique(self.story[self.selection]), np.unique(self.story[~self.selection]))
        if shared.size:
            raise ConfigError(f"UnitActivations.selection splits story {int(shared[0])}; split by whole stories")

    @property
    def n_units(self) -> int:
        return self.acts.shape[1]

    @property
    def n_tags(self) -> int:
        return len(self.tag_names)

    def id_fold(self, seed: int = 0) -> Int[np.ndarray, " token"]:
        """Fold (0/1) of each token, from a seeded hash of its token id (corpus-independent)."""
        ids, inv = np.unique(self.token_ids, return_inverse=True)
        fold = np.array([hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=2).digest()[0] & 1 for i in ids],
                        dtype=np.int8)
        return fold[inv]

    def identity(self) -> Int[np.ndarray, " token"]:
        """Code of each token's (token id, word type) pair: the strata of the within-identity tests."""
        return self.token_ids.astype(np.int64) * len(self.word_names) + self.words

    def tag_counts(self, mask: np.ndarray) -> Int[np.ndarray, "word tag"]:
        """How often each word type carries each tag among the tokens in ``mask``."""
        idx = self.words[mask].astype(np.int64) * self.n_tags + self.tags[mask]
        return np.bincount(idx, minlength=len(self.word_names) * self.n_tags).reshape(len(self.word_names), self.n_tags)

    def ambiguous_types(self, min_count: int = 2) -> Bool[np.ndarray, "word tag"]:
        """Word types that carry the tag and another tag, each ``min_count`` times, in the selection half."""
        takes = self.tag_counts(self.selection) >= min_count
        return takes & (takes.sum(1, keepdims=True) >= 2)

    def ambiguous_sets(self, min_count: int = 2) -> list[dict]:
        """Per tag, the held-out tokens of its ambiguous word types, in strata that hold both classes.

        A stratum is one (token id, word type) pair, so a token-id lookup scores exactly 0.5 inside
        it. Each entry: ``rows`` (indices into the held-out tokens), ``y`` (has the tag),
        ``strata``, support ``n_pos``/``n_neg``/``n_types`` (strata)/``n_stories``.
        """
        amb = self.ambiguous_types(min_count)  # [word, tag]
        out = ~self.selection
        words, tags, story, ident = self.words[out], self.tags[out], self.story[out], self.identity()[out]
        sets = []
        for t in range(self.n_tags):
            m = amb[words, t]
            y, w = tags[m] == t, ident[m]
            both = np.intersect1d(w[y], w[~y])  # strata holding a comparable pair
            keep = np.flatnonzero(m)[np.isin(w, both)]
            yk = tags[keep] == t
            sets.append({"rows": keep, "y": yk, "strata": ident[keep], "n_pos": int(yk.sum()),
                         "n_neg": int((~yk).sum()), "n_types": int(both.size),
                         "n_stories": int(np.unique(story[keep][yk]).size)})
        return sets


def from_arrays(acts, tags: Sequence[str], token_ids, words: Sequence[str], story, held_out_stories,
                unit_names: Sequence[str] | None = None) -> UnitActivations:
    """Build :class:`UnitActivations` from plain per-token arrays (string tags and words).

    ``held_out_stories``: story ids of the held-out half; every other story selects.
    Use this for sparse-autoencoder features: ``acts`` = feature activations ``[token, feature]``.
    """
    tag_names = sorted(set(tags))
    word_names = sorted({w.lower() for w in words})
    t_idx = {t: i for i, t in enumerate(tag_names)}
    w_idx = {w: i for i, w in enumerate(word_names)}
    story = np.asarray(story, dtype=np.int64)
    return UnitActivations(
        acts=np.asarray(acts, dtype=np.float32), tags=np.array([t_idx[t] for t in tags], dtype=np.int64),
        token_ids=np.asarray(token_ids, dtype=np.int64), words=np.array([w_idx[w.lower()] for w in words], dtype=np.int64),
        story=story, selection=~np.isin(story, np.asarray(held_out_stories)), tag_names=tag_names,
        word_names=word_names, unit_names=list(unit_names) if unit_names is not None else [])
