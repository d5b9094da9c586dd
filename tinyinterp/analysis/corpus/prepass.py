"""Streaming pre-pass: the corpus-wide facts every rank needs, without any rank holding the corpus.

Before its pass the neuron analysis needs two things computed over the whole corpus: the story
split (selection / held-out halves, a permutation of the story indices, so only the number
of stories matters) and the word x tag counts behind the ambiguous-word control and the tag
and word vocabularies (:func:`~tinyinterp.analysis.corpus.labels.label_corpus`). Here each rank
counts its own stories a chunk at a time (:func:`count_stories`), the counts are combined by
strings (:meth:`CorpusCounts.merge`, or :func:`combine_counts` across a process group), and
:meth:`CorpusCounts.split_indices` gives every rank the same split. A rank's memory is its
share of the tagged stories plus these counts, whose size is the vocabulary, not the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable, Iterator, Sequence

import numpy as np

from tinyinterp.analysis.corpus.labels import CorpusLabels, StoryRows, label_corpus
from tinyinterp.analysis.corpus.store import BOS_TAG, SPACE_TAG, TaggedCorpus


@dataclass
class CorpusCounts:
    """Corpus-wide counts, mergeable across chunks and ranks."""

    n_stories: int = 0
    n_tokens: int = 0
    pairs: dict[tuple[str, str], int] = field(default_factory=dict)  # (lower-cased word, UPOS) -> analysed tokens

    @property
    def tags(self) -> list[str]:
        """Sorted tags of analysed tokens (``CorpusLabels.tags`` of the whole corpus)."""
        return sorted({t for _, t in self.pairs})

    @property
    def words(self) -> list[str]:
        """Sorted lower-cased word types of analysed tokens (``CorpusLabels.words``)."""
        return sorted({w for w, _ in self.pairs})

    def tag_counts(self) -> np.ndarray:
        """int64 ``[n_words, n_tags]`` in :attr:`words` x :attr:`tags` order (``CorpusLabels.tag_counts``)."""
        wi = {w: i for i, w in enumerate(self.words)}
        ti = {t: i for i, t in enumerate(self.tags)}
        out = np.zeros((len(wi), len(ti)), dtype=np.int64)
        for (w, t), c in self.pairs.items():
            out[wi[w], ti[t]] += c
        return out

    def merge(self, other: "CorpusCounts") -> "CorpusCounts":
        pairs = dict(self.pairs)
        for k, c in other.pairs.items():
            pairs[k] = pairs.get(k, 0) + c
        return CorpusCounts(self.n_stories + other.n_stories, self.n_tokens + other.n_tokens, pairs)

    def split_indices(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The two halves of the corpus by story, as :meth:`TaggedCorpus.split_indices` gives them."""
        order = np.random.default_rng(seed).permutation(self.n_stories)
        half = len(order) // 2
        return np.sort(order[:half]), np.sort(order[half:])

    def to_json(self) -> dict:
        return {"n_stories": self.n_stories, "n_tokens": self.n_tokens,
                "pairs": [[w, t, c] for (w, t), c in sorted(self.pairs.items())]}

    @classmethod
    def from_json(cls, d: dict) -> "CorpusCounts":
        return cls(int(d["n_stories"]), int(d["n_tokens"]), {(w, t): int(c) for w, t, c in d["pairs"]})


def count_corpus(corpus: TaggedCorpus, include_continuations: bool = False,
                 exclude_tags: Sequence[str] = (BOS_TAG, SPACE_TAG), labels: CorpusLabels | None = None) -> CorpusCounts:
    """The counts of one tagged chunk, labelled exactly as :func:`label_corpus` labels it (``labels``: that
    labelling, when the caller has it)."""
    labels = labels if labels is not None else label_corpus(corpus, include_continuations, exclude_tags)
    w, t = np.nonzero(labels.tag_counts)
    pairs = {(labels.words[i], labels.tags[j]): int(labels.tag_counts[i, j]) for i, j in zip(w.tolist(), t.tolist())}
    return CorpusCounts(len(corpus), corpus.n_tokens, pairs)


def analysed_per_story(labels: CorpusLabels) -> np.ndarray:
    """int64 [n_stories]: analysed tokens (tag id >= 0) of every story of ``labels``."""
    cum = np.concatenate([[0], np.cumsum(labels.flat_tags >= 0, dtype=np.int64)])
    return cum[labels.starts[1:]] - cum[labels.starts[:-1]]


@dataclass
class CorpusShare:
    """What a rank that holds only its own stories knows of the whole corpus: the pre-pass's fixed statistics
    (:func:`tinyinterp.analysis.distributed.share_prepass`). Its size is the vocabulary plus two integers per story."""

    counts: CorpusCounts  # word x tag counts of every story's analysed tokens
    lengths: np.ndarray  # int64 [n_stories]: tokens of every story (as packed: cut to the model's n_ctx)
    analysed: np.ndarray  # int64 [n_stories]: analysed tokens of every story
    include_continuations: bool  # the label options the counts were made with
    exclude_tags: tuple[str, ...]

    def labels(self, share: TaggedCorpus, include_continuations: bool, exclude_tags: Sequence[str]) -> CorpusLabels:
        """The labels of ``share`` (from :func:`share_corpus`) in the corpus-wide vocabulary and counts."""
        if (bool(include_continuations), tuple(exclude_tags)) != (self.include_continuations, self.exclude_tags):
            from tinyinterp.errors import ConfigError

            raise ConfigError("the pre-pass counted words with other label options (include_continuations, exclude_tags) "
                              "than the neuron analysis uses; run the pre-pass with the analysis's NeuronConfig")
        out = labels_for_share(share, self.counts, include_continuations, exclude_tags)
        out.story_counts = self.analysed
        return out


def share_corpus(local: TaggedCorpus, positions: Sequence[int] | np.ndarray, share: CorpusShare) -> TaggedCorpus:
    """A rank's stories ``local`` (story ``j`` is corpus story ``positions[j]``) as a corpus of all the corpus's
    stories in which every other story is empty: story indices, the split and the jobs' groups are those of the
    whole corpus, memory is the rank's share plus ``share``."""
    n = len(share.lengths)
    return TaggedCorpus(local.packed().placed(positions, n), local.spacy_model, local.coverage, dict(local.meta),
                        share=share)


def count_stories(chunks: Iterable[TaggedCorpus], include_continuations: bool = False,
                  exclude_tags: Sequence[str] = (BOS_TAG, SPACE_TAG)) -> CorpusCounts:
    """Counts over a stream of tagged chunks (each dropped after counting)."""
    total = CorpusCounts()
    for chunk in chunks:
        total = total.merge(count_corpus(chunk, include_continuations, exclude_tags))
    return total


def combine_counts(counts: CorpusCounts, info) -> CorpusCounts:
    """Every rank's counts added, on every rank (``info``: a :class:`~tinyinterp.training.distributed.DistInfo`)."""
    if not info.enabled:
        return counts
    import torch.distributed as dist

    parts: list = [None] * info.world
    dist.all_gather_object(parts, counts.to_json())
    total = CorpusCounts()
    for p in parts:
        total = total.merge(CorpusCounts.from_json(p))
    return total


def own_stories(texts: Iterable[str], rank: int, world: int) -> Iterator[tuple[int, str]]:
    """``(story index, text)`` of the non-blank stories with ``index % world == rank``, streamed.

    Story indices count non-blank stories only, as a :class:`TaggedCorpus` of all ``texts`` numbers them."""
    i = 0
    for t in texts:
        if not t.strip():
            continue
        if i % world == rank:
            yield i, t
        i += 1


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Lists of up to ``size`` consecutive items."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def labels_for_share(share: TaggedCorpus, counts: CorpusCounts, include_continuations: bool = False,
                     exclude_tags: Sequence[str] = (BOS_TAG, SPACE_TAG)):
    """:class:`~tinyinterp.analysis.corpus.labels.CorpusLabels` of a rank's ``share`` in the corpus-wide vocabulary.

    Tag and word ids, :attr:`tags`, :attr:`words` and ``tag_counts`` are those :func:`label_corpus` gives on
    the whole corpus (``counts`` from :func:`combine_counts`), so statistics of every rank line up."""
    local = label_corpus(share, include_continuations, exclude_tags)
    tags, words = counts.tags, counts.words
    tmap = {t: i for i, t in enumerate(tags)}
    wmap = {w: i for i, w in enumerate(words)}
    missing = sorted(set(local.tags) - set(tmap)) or sorted(set(local.words) - set(wmap))[:3]
    if missing:
        from tinyinterp.errors import DataError

        raise DataError(f"the corpus counts lack {missing} found in this rank's stories; count every rank's share")
    t_table = np.array([tmap[t] for t in local.tags] + [-1], dtype=np.int64)  # local id -> global id; -1 stays -1
    w_table = np.array([wmap[w] for w in local.words] + [-1], dtype=np.int64)
    signed = lambda n: np.int8 if n < 2**7 else np.int16 if n < 2**15 else np.int32  # noqa: E731
    flat_tags = t_table[local.flat_tags.astype(np.int64)].astype(signed(len(tags)))
    flat_words = w_table[local.flat_words.astype(np.int64)].astype(signed(len(words)))
    return CorpusLabels(tags=tags, words=words, tag_ids=StoryRows(flat_tags, local.starts),
                        word_ids=StoryRows(flat_words, local.starts),
                        tag_counts=counts.tag_counts(), flat_tags=flat_tags, flat_words=flat_words, starts=local.starts)
