"""Integer labels of a tagged corpus: every token's UPOS and (lower-cased) word as small ids.

:func:`label_corpus` turns a corpus's tags into integer arrays once, so the per-batch work of
the neuron statistics and the probes stays vectorised; :class:`CorpusLabels` hands them out
per batch (:meth:`CorpusLabels.padded`) and how often each word type carries each tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from tinyinterp.analysis.corpus.store import BOS_TAG, SPACE_TAG, TaggedCorpus
from tinyinterp.errors import DataError


class StoryRows(Sequence[np.ndarray]):
    """Story ``i``'s rows ``flat[starts[i]:starts[i + 1]]`` of a flat per-token array, made on access
    (a list of views costs ~100 bytes per story: as much as a rank's share when it holds few stories)."""

    def __init__(self, flat: np.ndarray, starts: np.ndarray):
        self.flat, self.starts = flat, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"story {i} of {len(self)}")
        i %= len(self)
        return self.flat[int(self.starts[i]): int(self.starts[i + 1])]


@dataclass
class CorpusLabels:
    """Integer tags and word types per token; -1 marks tokens left out of the analysis."""

    tags: list[str]  # tag vocabulary (sorted); tag id i means tags[i]
    words: list[str]  # word-type vocabulary (lower-cased words)
    tag_ids: Sequence[np.ndarray]  # per story [n] (views of flat_tags; int8/16/32); -1: BOS/space/excluded tag/continuation
    word_ids: Sequence[np.ndarray]  # per story [n] (int8/16/32); -1 where tag_ids is -1
    tag_counts: np.ndarray  # int64 [n_words, n_tags]: how often each word type carries each tag
    flat_tags: np.ndarray | None = None  # [n_tokens]: tag_ids of every story, concatenated
    flat_words: np.ndarray | None = None  # [n_tokens]
    starts: np.ndarray | None = None  # int64 [n_stories + 1]: story i is flat rows starts[i]:starts[i+1]
    story_counts: np.ndarray | None = None  # int64 [n_stories]: analysed tokens per story, when the labels hold one
    # rank's share of the corpus (the others' stories empty): the corpus-wide counts from the pre-pass

    def __post_init__(self) -> None:
        if self.flat_tags is None:
            self.flat_tags = np.concatenate(self.tag_ids) if self.tag_ids else np.zeros(0, np.int32)
            self.flat_words = np.concatenate(self.word_ids) if self.word_ids else np.zeros(0, np.int32)
            lengths = [len(t) for t in self.tag_ids]
            self.starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])

    def padded(self, stories: np.ndarray, n_pos: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Tag and word ids for a batch, padded with -1 to ``n_pos`` (longer stories truncated)."""
        stories = np.asarray(stories, dtype=np.int64)
        lo = self.starts[stories]
        n = np.minimum(self.starts[stories + 1] - lo, n_pos)
        pos = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        rows, cols = np.repeat(np.arange(len(stories)), n), pos
        src = np.repeat(lo, n) + pos
        tags = np.full((len(stories), n_pos), -1, dtype=np.int64)
        words = np.full((len(stories), n_pos), -1, dtype=np.int64)
        tags[rows, cols] = self.flat_tags[src]
        words[rows, cols] = self.flat_words[src]
        return torch.from_numpy(tags), torch.from_numpy(words)

    def analysed(self, stories: np.ndarray, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The analysed tokens of a batch (``mask`` ``[batch, pos]``: False on padding): their row and
        position (CPU int64), tag id and word id."""
        tags, words = self.padded(stories, mask.shape[1])  # [batch, pos]
        b, p = ((tags >= 0) & mask.cpu()).nonzero(as_tuple=True)
        return b, p, tags[b, p], words[b, p]

    def sample_stories(self, indices: np.ndarray, n_tokens: int, seed: int) -> np.ndarray:
        """Whole stories of ``indices`` in a seeded random order, until they hold ``n_tokens`` analysed tokens."""
        order = np.random.default_rng(seed).permutation(indices)
        counts = (self.story_counts[order] if self.story_counts is not None
                  else np.array([(self.tag_ids[i] >= 0).sum() for i in order]))
        return order[: int(np.searchsorted(np.cumsum(counts), n_tokens)) + 1]



def _table(present: np.ndarray, names: list[str]) -> tuple[list[str], np.ndarray]:
    """Sorted distinct ``names[c]`` over the codes ``c`` flagged in ``present``, and a table code -> index (-1: absent)."""
    codes = np.nonzero(present)[0].tolist()
    vocab = sorted({names[c] for c in codes})
    where = {n: i for i, n in enumerate(vocab)}
    table = np.full(len(names), -1, dtype=np.int32)
    table[codes] = [where[names[c]] for c in codes]
    return vocab, table


def label_corpus(
    corpus: TaggedCorpus,
    include_continuations: bool = False,
    exclude_tags: Sequence[str] = (BOS_TAG, SPACE_TAG),
    chunk_stories: int = 1024,
) -> CorpusLabels:
    """Encode every token's UPOS and (lower-cased) word as integers, vectorised over the corpus.

    Tokens tagged with ``exclude_tags`` get -1; so do continuation tokens (tokens that do not
    start their word) unless ``include_continuations`` (they then carry their word's tag).
    Works on the packed codes of the corpus (a list-backed corpus is packed first),
    ``chunk_stories`` stories at a time, so temporaries stay small; ids are stored in the
    narrowest signed dtype (3 bytes per token for TinyStories).
    """
    if len(corpus) == 0:
        raise DataError("corpus has no stories; pass at least two tagged stories")
    store = corpus.packed()
    upos_names, word_names = store.vocab["upos"], store.vocab["word"]
    excluded = [i for i, u in enumerate(upos_names) if u in set(exclude_tags)]
    chunks = [np.arange(c0, min(c0 + chunk_stories, len(store))) for c0 in range(0, len(store), chunk_stories)]

    def kept(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        upos = store.flat("upos", idx)
        keep = ~np.isin(upos, excluded)
        if not include_continuations:
            keep &= ~store.flat("cont", idx)
        return upos, store.flat("word", idx), keep

    seen_upos = np.zeros(len(upos_names), dtype=bool)
    seen_word = np.zeros(len(word_names), dtype=bool)
    for idx in chunks:  # which codes occur on analysed tokens
        upos, word, keep = kept(idx)
        seen_upos[upos[keep]] = True
        seen_word[word[keep]] = True
    tags, tag_table = _table(seen_upos, upos_names)
    words, word_table = _table(seen_word, [w.lower() for w in word_names])
    starts = np.concatenate([[0], np.cumsum(store.lengths)])
    signed = lambda n: np.int8 if n < 2**7 else np.int16 if n < 2**15 else np.int32  # noqa: E731  (-1 marks gaps)
    tag_ids = np.empty(int(starts[-1]), dtype=signed(len(tags)))
    word_ids = np.empty(int(starts[-1]), dtype=signed(len(words)))
    counts = np.zeros(len(words) * len(tags), dtype=np.int64)
    for idx in chunks:
        upos, word, keep = kept(idx)
        rows = slice(int(starts[idx[0]]), int(starts[idx[-1] + 1]))
        t = tag_ids[rows] = np.where(keep, tag_table[upos], -1)
        w = word_ids[rows] = np.where(keep, word_table[word], -1)
        counts += np.bincount(w[keep].astype(np.int64) * len(tags) + t[keep], minlength=len(counts))
    return CorpusLabels(tags=tags, words=words, tag_ids=StoryRows(tag_ids, starts), word_ids=StoryRows(word_ids, starts),
                        tag_counts=counts.reshape(len(words), len(tags)), flat_tags=tag_ids, flat_words=word_ids,
                        starts=starts)

