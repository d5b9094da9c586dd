"""A corpus of stories tokenised for a model and tagged with part of speech.

:class:`TaggedStory` is the unit every analysis consumes: model token ids (BOS first),
the character span of each token in the text, and per token the spaCy annotation of the
word the token starts in (UPOS, fine tag, entity type), plus whether the token continues
a word begun by an earlier token. Tags come from :mod:`tinyinterp.analysis.corpus.tagging`.

Memory. :func:`~tinyinterp.analysis.corpus.tagging.tag_corpus` returns a corpus backed by a
:class:`StoryStore`: every field of every story lives in one flat numpy array (token ids,
offsets, continuation flags) or as small integer codes into shared vocabularies (UPOS, fine
tag, entity type, word), each in the narrowest unsigned dtype that holds it: about 12 bytes
per token for TinyStories, plus the text. ``corpus.stories[i]`` builds
a :class:`TaggedStory` view on access (lists of strings, as before), so code that reads
stories one at a time works unchanged, while the analyses read the packed arrays directly.
Stories from a store are read-only copies: editing one does not change the corpus.
A corpus may also be built from a plain list of :class:`TaggedStory` (kept as given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence, overload

import numpy as np

from tinyinterp.errors import DataError

BOS_TAG = "BOS"  # the <|endoftext|> token prepended to every story
SPACE_TAG = "SPACE"  # tokens made only of whitespace
FIELDS = ("upos", "tag", "ent", "word")  # string fields stored as codes


@dataclass
class TaggedStory:
    text: str
    tokens: np.ndarray  # int64 [n]; tokens[0] is BOS
    offsets: np.ndarray  # int64 [n, 2]; character span of each token in ``text`` (BOS: (0, 0))
    upos: list[str]  # [n] UPOS of the word the token starts in; BOS_TAG / SPACE_TAG otherwise
    tag: list[str]  # [n] fine-grained (Penn) tag, same convention
    ent: list[str]  # [n] entity type ("" when none), e.g. "PERSON"
    word: list[str]  # [n] the word (as written) the token belongs to ("" for BOS/space)
    continuation: np.ndarray  # bool [n]; True when the token does not start its word

    def __len__(self) -> int:
        return len(self.tokens)


class StoreBuilder:
    """Accumulates stories into the flat arrays of a :class:`StoryStore` (one story at a time)."""

    def __init__(self) -> None:
        self.vocab: dict[str, dict[str, int]] = {f: {} for f in FIELDS}
        self.texts: list[str] = []
        self.lengths: list[int] = []
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in ("tokens", "offsets", "cont", *FIELDS)}  # per story
        self.blocks: dict[str, list[np.ndarray]] = {k: [] for k in self.parts}  # merged by flush()

    def encode(self, name: str, values: Sequence[str]) -> np.ndarray:
        """int32 codes of ``values`` in the vocabulary of field ``name`` (new strings are added)."""
        voc = self.vocab[name]
        return np.fromiter((voc.setdefault(v, len(voc)) for v in values), np.int32, len(values))

    def add(self, text: str, tokens: np.ndarray, offsets: np.ndarray, cont: np.ndarray, **codes: np.ndarray) -> None:
        """One story: ids, offsets ``[n, 2]``, continuation flags and codes for every field of :data:`FIELDS`."""
        n = len(tokens)
        if not (len(offsets) == len(cont) == n and all(len(codes[f]) == n for f in FIELDS)):
            raise DataError("a TaggedStory has tokens, offsets, upos, tag, ent, word and continuation of different lengths; re-tag the corpus")
        self.texts.append(text)
        self.lengths.append(n)
        self.parts["tokens"].append(np.asarray(tokens, dtype=np.int32))
        self.parts["offsets"].append(np.asarray(offsets, dtype=np.int32).reshape(n, 2))
        self.parts["cont"].append(np.asarray(cont, dtype=bool))
        for f in FIELDS:
            self.parts[f].append(np.asarray(codes[f], dtype=np.int32))

    def add_story(self, s: TaggedStory) -> None:
        self.add(s.text, s.tokens, s.offsets, s.continuation, **{f: self.encode(f, getattr(s, f)) for f in FIELDS})

    def flush(self) -> None:
        """Merge the stories added since the last flush into one compact block per field, so a
        large corpus is never held as many small int32 arrays (memory and fragmentation)."""
        for name, parts in self.parts.items():
            if parts:
                self.blocks[name].append(_compact(np.concatenate(parts)))
                parts.clear()

    def build(self) -> "StoryStore":
        self.flush()

        def cat(name: str, shape: tuple[int, ...] = ()) -> np.ndarray:
            blocks = self.blocks.pop(name)  # blocks of mixed widths promote to the widest
            return np.concatenate(blocks) if blocks else np.zeros((0, *shape), np.uint8)

        data = _Packed(
            texts=self.texts,
            starts=np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)]),
            tokens=cat("tokens"), offsets=cat("offsets", (2,)), cont=cat("cont").astype(bool),
            codes={f: cat(f) for f in FIELDS},
            vocab={f: list(self.vocab[f]) for f in FIELDS},
        )
        for arr in (data.starts, data.tokens, data.offsets, data.cont, *data.codes.values()):
            arr.flags.writeable = False  # shared by every view of the store
        return StoryStore(data)


def _compact(a: np.ndarray) -> np.ndarray:
    """``a`` (non-negative integers or bools) in the narrowest unsigned dtype that holds it."""
    if a.dtype == bool or not a.size:
        return a
    if a.min() < 0:
        raise DataError("negative token id, offset or code in a story; re-tag the corpus")
    top = int(a.max())
    return a.astype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32 if top < 2**32 else np.int64)


@dataclass
class _Packed:
    texts: list[str]  # [S]
    starts: np.ndarray  # int64 [S + 1]; story i is rows starts[i]:starts[i+1] of the flat arrays
    tokens: np.ndarray  # [N], narrowest unsigned dtype that holds the ids (uint16 for a 4096 vocabulary)
    offsets: np.ndarray  # [N, 2], character offsets within each story's text (uint16 for TinyStories)
    cont: np.ndarray  # bool [N]
    codes: dict[str, np.ndarray]  # field -> uint8/uint16/... [N], codes into vocab[field]
    vocab: dict[str, list[str]]  # field -> strings (code i means vocab[field][i])
    _obj: dict[str, np.ndarray] = field(default_factory=dict)  # field -> vocab as an object array (lazy)

    def strings(self, name: str, codes: np.ndarray) -> list[str]:
        if name not in self._obj:
            self._obj[name] = np.array(self.vocab[name], dtype=object)
        return self._obj[name][codes].tolist()


class StoryStore(Sequence[TaggedStory]):
    """Read-only sequence of stories packed into flat arrays (see the module docstring).

    Indexing with an int gives a :class:`TaggedStory`; with a slice or an index array, another
    store over the same arrays (no copy). :attr:`lengths`, :meth:`tokens` and :meth:`flat` read
    the packed data without building stories.
    """

    def __init__(self, data: _Packed, index: np.ndarray | None = None):
        self._data = data
        self._index = np.arange(len(data.texts), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._index)

    @overload
    def __getitem__(self, i: int) -> TaggedStory: ...
    @overload
    def __getitem__(self, i: slice | np.ndarray | list) -> "StoryStore": ...
    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            return self._story(int(self._index[i]))
        return StoryStore(self._data, self._index[i])

    def __iter__(self) -> Iterator[TaggedStory]:
        for j in self._index.tolist():
            yield self._story(j)

    def _story(self, j: int) -> TaggedStory:
        d = self._data
        r = slice(int(d.starts[j]), int(d.starts[j + 1]))
        return TaggedStory(text=d.texts[j], tokens=d.tokens[r].astype(np.int64), offsets=d.offsets[r].astype(np.int64),
                           continuation=d.cont[r].copy(), **{f: d.strings(f, d.codes[f][r]) for f in FIELDS})

    @property
    def lengths(self) -> np.ndarray:
        """int64 [n_stories]: tokens per story."""
        return np.diff(self._data.starts)[self._index]

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def vocab(self) -> dict[str, list[str]]:
        """Field name -> list of strings; ``flat(name)`` returns codes into it."""
        return self._data.vocab

    def text(self, i: int) -> str:
        return self._data.texts[int(self._index[i])]

    def tokens(self, i: int, n: int | None = None) -> np.ndarray:
        """int64 token ids of story ``i`` (its first ``n``)."""
        j = int(self._index[i])
        lo, hi = int(self._data.starts[j]), int(self._data.starts[j + 1])
        return self._data.tokens[lo: hi if n is None else min(hi, lo + n)].astype(np.int64)

    def rows(self, stories: Sequence[int] | np.ndarray, n_pos: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Flat-array rows of ``stories`` (each cut to ``n_pos`` tokens) and each row's token position."""
        j = self._index[np.asarray(stories, dtype=np.int64)]
        lo = self._data.starts[j]
        n = self._data.starts[j + 1] - lo
        if n_pos is not None:
            n = np.minimum(n, n_pos)
        pos = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        return np.repeat(lo, n) + pos, pos

    def flat(self, name: str, stories: Sequence[int] | np.ndarray | None = None, n_pos: int | None = None) -> np.ndarray:
        """Field ``name`` (``tokens``, ``cont`` or a code field) of ``stories`` (default: all; each cut to
        ``n_pos`` tokens), concatenated."""
        arr = {"tokens": self._data.tokens, "cont": self._data.cont}.get(name)
        arr = self._data.codes[name] if arr is None else arr
        if stories is None and n_pos is None and len(self._index) == len(self._data.texts) \
                and (self._index == np.arange(len(self._index))).all():
            return arr  # the whole store in order: no gather
        rows, _ = self.rows(np.arange(len(self)) if stories is None else stories, n_pos)
        return arr[rows]

    def padded(self, name: str, stories: Sequence[int] | np.ndarray, n_pos: int, fill: int = -1) -> np.ndarray:
        """Field ``name`` of ``stories`` as a ``[len(stories), n_pos]`` int64 array, right-padded with ``fill``."""
        arr = {"tokens": self._data.tokens, "cont": self._data.cont}.get(name)
        arr = self._data.codes[name] if arr is None else arr
        rows, pos = self.rows(stories, n_pos)
        out = np.full((len(stories), n_pos), fill, dtype=np.int64)
        lens = np.minimum(np.diff(self._data.starts)[self._index[np.asarray(stories, dtype=np.int64)]], n_pos)
        out[np.repeat(np.arange(len(stories)), lens), pos] = arr[rows]
        return out

    def placed(self, positions: Sequence[int] | np.ndarray, n: int) -> "StoryStore":
        """A store of ``n`` stories whose story ``positions[j]`` is this store's story ``j``, every other one empty
        (a rank's share of a corpus at the corpus-wide story indices). The packed arrays are shared, not copied."""
        d = self._data
        starts = np.append(d.starts, d.starts[-1])  # one extra zero-length story: where every other position points
        starts.flags.writeable = False
        data = _Packed(d.texts + [""], starts, d.tokens, d.offsets, d.cont, d.codes, d.vocab)
        index = np.full(n, len(d.texts), dtype=np.int64)
        index[np.asarray(positions, dtype=np.int64)] = self._index
        return StoryStore(data, index)

    @classmethod
    def from_stories(cls, stories: Sequence[TaggedStory]) -> "StoryStore":
        b = StoreBuilder()
        for s in stories:
            b.add_story(s)
        return b.build()


@dataclass
class TaggedCorpus:
    stories: Sequence[TaggedStory]  # a StoryStore (from tag_corpus) or a list of TaggedStory
    spacy_model: str = ""  # "name==version" of the tagger
    coverage: float = 1.0  # share of non-space characters of words that were aligned to a token
    meta: dict = field(default_factory=dict)
    # a rank's share of a corpus (torchrun): a :class:`~tinyinterp.analysis.corpus.prepass.CorpusShare` with the
    # corpus-wide facts; the stories of other ranks are empty here (see ``prepass.share_corpus``)
    share: Any = None

    def __len__(self) -> int:
        return len(self.stories)

    def lengths(self) -> np.ndarray:
        """int64 [n_stories]: tokens per story (without building stories when packed)."""
        if isinstance(self.stories, StoryStore):
            return self.stories.lengths
        return np.fromiter((len(s.tokens) for s in self.stories), np.int64, len(self.stories))

    @property
    def n_tokens(self) -> int:
        return int(self.lengths().sum())

    def story_tokens(self, i: int, n: int | None = None) -> np.ndarray:
        """int64 token ids of story ``i`` (its first ``n``)."""
        if isinstance(self.stories, StoryStore):
            return self.stories.tokens(i, n)
        return np.asarray(self.stories[i].tokens[:n], dtype=np.int64)

    def packed(self) -> StoryStore:
        """The stories as a :class:`StoryStore` (packed now when the corpus holds a list)."""
        return self.stories if isinstance(self.stories, StoryStore) else StoryStore.from_stories(self.stories)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "TaggedCorpus":
        """The stories at ``indices`` (in that order), with this corpus's metadata."""
        idx = np.asarray(indices, dtype=np.int64)
        stories = self.stories[idx] if isinstance(self.stories, StoryStore) else [self.stories[i] for i in idx.tolist()]
        return TaggedCorpus(stories, self.spacy_model, self.coverage, dict(self.meta))

    def split_indices(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Story indices (sorted) of the two halves of :meth:`split`."""
        order = np.random.default_rng(seed).permutation(len(self.stories))
        half = len(order) // 2
        return np.sort(order[:half]), np.sort(order[half:])

    def split(self, seed: int = 0) -> tuple["TaggedCorpus", "TaggedCorpus"]:
        """Two halves by story (deterministic): select on one, report on the other."""
        a, b = self.split_indices(seed)
        return self.subset(a), self.subset(b)
