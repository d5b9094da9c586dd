"""Stream a tagged corpus through a model a batch at a time, caching only the hooks asked for.

:func:`stream_activations` groups stories of similar length into batches of about
``batch_tokens`` tokens (right-padded to the batch's longest story, padding masked), runs
``run_with_cache`` with a ``names_filter`` for just the requested hooks, stops the forward
pass after the last block it needs (no unembedding), and yields one :class:`ActivationBatch`
at a time. Callers fold each batch into fixed-size statistics, so memory does not grow with
the corpus. :class:`TopKBuffer` keeps the k largest activations per unit (with story and
position) in fixed memory and merges across shards. :func:`label_corpus` turns a corpus's
string tags into integer arrays once, so per-batch work stays vectorised.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from itertools import chain
from typing import Iterator, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tinyinterp.analysis.corpus import BOS_TAG, SPACE_TAG, TaggedCorpus
from tinyinterp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

EMBED_LAYER = -1  # "layer" index of the embedding (the residual stream before block 0)
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def mlp_hook(layer: int) -> str:
    """Name of the MLP neuron activations (after the nonlinearity) of ``layer``."""
    return f"blocks.{layer}.mlp.hook_post"


def resid_hook(layer: int) -> str:
    """Residual stream after block ``layer``; ``EMBED_LAYER`` (-1): token + position embedding."""
    return "blocks.0.hook_resid_pre" if layer == EMBED_LAYER else f"blocks.{layer}.hook_resid_post"


@dataclass
class ActivationBatch:
    stories: np.ndarray  # int64 [batch]; indices into corpus.stories
    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]  # False on padding
    acts: dict[str, Float[Tensor, "batch pos ..."]]  # hook name -> activations

    @property
    def lengths(self) -> Int[Tensor, " batch"]:
        return self.mask.sum(1)


def story_lengths(corpus: TaggedCorpus, n_ctx: int) -> np.ndarray:
    """Tokens per story as the model sees them (stories longer than ``n_ctx`` are truncated)."""
    return np.minimum(np.fromiter((len(s) for s in corpus.stories), np.int64, len(corpus)), n_ctx)


def plan_batches(lengths: np.ndarray, batch_tokens: int, indices: Sequence[int] | None = None) -> list[np.ndarray]:
    """Group stories (sorted by length) so that ``n_stories * longest <= batch_tokens`` per batch."""
    idx = np.arange(len(lengths)) if indices is None else np.asarray(indices, dtype=np.int64)
    idx = idx[np.argsort(lengths[idx], kind="stable")]
    batches, start = [], 0
    for i in range(1, len(idx) + 1):  # one step per story, not per token
        if i == len(idx) or (i + 1 - start) * lengths[idx[i]] > batch_tokens:
            batches.append(idx[start:i])
            start = i
    return batches


def _stop_layer(hooks: Sequence[str], n_layers: int) -> int | None:
    """Blocks needed for ``hooks`` (exclusive), or None when a hook lies after the last block."""
    last = -1
    for h in hooks:
        m = _BLOCK.match(h)
        if m is None:
            if h.startswith(("hook_embed", "hook_pos_embed", "hook_tokens")):
                continue
            return None
        last = max(last, int(m.group(1)))
    return min(last + 1, n_layers)


def stream_activations(
    model,
    corpus: TaggedCorpus,
    hooks: Sequence[str],
    batch_tokens: int = 8192,
    indices: Sequence[int] | None = None,
    progress: bool = False,
    desc: str = "activations",
) -> Iterator[ActivationBatch]:
    """Yield the activations at ``hooks`` for every story (or the stories in ``indices``).

    Batches hold stories of similar length, right-padded (causal attention: padding never
    affects real positions); ``mask`` marks real tokens. Stories longer than the model's
    ``n_ctx`` are truncated to it (logged once).
    """
    if batch_tokens < 1:
        raise ConfigError(f"batch_tokens={batch_tokens}: must be a positive number of tokens")
    names = set(hooks)
    unknown = sorted(names - set(model.hook_dict))
    if unknown:
        raise ConfigError(f"unknown hook name(s) {unknown[:3]}; see model.hook_dict for valid names")
    n_ctx = model.cfg.n_ctx
    lengths = story_lengths(corpus, n_ctx)
    n_long = int(sum(len(s) > n_ctx for s in corpus.stories))
    if n_long:
        log.info("%d of %d stories are longer than n_ctx=%d tokens; truncated", n_long, len(corpus), n_ctx)
    if (lengths < 1).any():
        raise DataError("corpus has an empty story (no tokens); drop it before analysis")
    device = model.cfg.device
    # right padding under causal attention needs no mask; a left-padding tokenizer would make
    # TransformerLens infer one from pad ids, so then pass ours explicitly
    explicit_mask = getattr(getattr(model, "tokenizer", None), "padding_side", "right") == "left"
    stop = _stop_layer(list(names), model.cfg.n_layers)
    batches = plan_batches(lengths, max(batch_tokens, n_ctx), indices)
    total = int(lengths[np.concatenate(batches)].sum()) if batches else 0
    bar = tqdm(total=total, desc=desc, unit="tok", disable=not progress, leave=False)
    for idx in batches:
        n_pos = int(lengths[idx].max())
        tokens = torch.zeros((len(idx), n_pos), dtype=torch.long)  # [batch, pos]
        for row, i in enumerate(idx):  # one copy per story
            tokens[row, : lengths[i]] = torch.as_tensor(corpus.stories[i].tokens[: lengths[i]])
        mask = torch.arange(n_pos)[None, :] < torch.as_tensor(lengths[idx])[:, None]  # [batch, pos]
        if int(tokens.max()) >= model.cfg.d_vocab or int(tokens.min()) < 0:
            raise DataError(f"corpus has token ids outside [0, {model.cfg.d_vocab}); tag it with this model's tokenizer")
        with torch.inference_mode():
            _, cache = model.run_with_cache(
                tokens.to(device), names_filter=lambda n: n in names, stop_at_layer=stop,
                attention_mask=mask.long().to(device) if explicit_mask else None, return_cache_object=False,
            )
        bar.update(int(lengths[idx].sum()))
        yield ActivationBatch(stories=idx, tokens=tokens, mask=mask.to(device), acts=dict(cache))
    bar.close()


@dataclass
class CorpusLabels:
    """Integer tags and word types per token; -1 marks tokens left out of the analysis."""

    tags: list[str]  # tag vocabulary (sorted); tag id i means tags[i]
    words: list[str]  # word-type vocabulary (lower-cased words)
    tag_ids: list[np.ndarray]  # per story, int32 [n]; -1: BOS/space/excluded tag/continuation token
    word_ids: list[np.ndarray]  # per story, int32 [n]; -1 where tag_ids is -1
    tag_counts: np.ndarray  # int64 [n_words, n_tags]: how often each word type carries each tag

    def padded(self, stories: np.ndarray, n_pos: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Tag and word ids for a batch, padded with -1 to ``n_pos`` (longer stories truncated)."""
        tags = torch.full((len(stories), n_pos), -1, dtype=torch.long)
        words = torch.full((len(stories), n_pos), -1, dtype=torch.long)
        for row, i in enumerate(stories):
            n = min(n_pos, len(self.tag_ids[i]))
            tags[row, :n] = torch.from_numpy(self.tag_ids[i][:n].astype(np.int64))
            words[row, :n] = torch.from_numpy(self.word_ids[i][:n].astype(np.int64))
        return tags, words

    def ambiguous(self, min_count: int = 1) -> np.ndarray:
        """bool [n_words, n_tags]: word takes this tag (>= min_count times) and at least one other."""
        takes = self.tag_counts >= min_count
        return takes & (takes.sum(1, keepdims=True) >= 2)


def _vocab_ids(values: np.ndarray, vocab: dict[str, int]) -> np.ndarray:
    """Ids of ``values`` in ``vocab`` (new strings appended), via one np.unique per call."""
    uniq, inv = np.unique(values, return_inverse=True)
    ids = np.fromiter((vocab.setdefault(str(u), len(vocab)) for u in uniq), np.int64, len(uniq))
    return ids[inv]


def _sorted_remap(ids: np.ndarray, vocab: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """Renumber ``ids`` (-1 kept) so that ids follow the sorted vocabulary."""
    names = sorted(vocab)
    new = np.empty(len(vocab), dtype=np.int64)
    new[[vocab[n] for n in names]] = np.arange(len(names))
    return names, np.where(ids >= 0, new[np.maximum(ids, 0)], -1).astype(np.int32)


def label_corpus(
    corpus: TaggedCorpus,
    include_continuations: bool = False,
    exclude_tags: Sequence[str] = (BOS_TAG, SPACE_TAG),
    chunk_stories: int = 4096,
) -> CorpusLabels:
    """Encode every token's UPOS and (lower-cased) word as integers, vectorised over the corpus.

    Tokens tagged with ``exclude_tags`` get -1; so do continuation tokens (tokens that do not
    start their word) unless ``include_continuations`` (they then carry their word's tag).
    Stories are encoded ``chunk_stories`` at a time, so temporary string arrays stay small;
    the result holds 8 bytes per token.
    """
    if len(corpus) == 0:
        raise DataError("corpus has no stories; pass at least two tagged stories")
    for s in corpus.stories:
        if not (len(s.upos) == len(s.word) == len(s.continuation) == len(s.tokens)):
            raise DataError("a TaggedStory has tokens, upos, word and continuation of different lengths; re-tag the corpus")
    lengths = np.fromiter((len(s) for s in corpus.stories), np.int64, len(corpus))
    tag_vocab: dict[str, int] = {}
    word_vocab: dict[str, int] = {}
    tag_parts, word_parts = [], []
    for c0 in range(0, len(corpus), chunk_stories):
        chunk = corpus.stories[c0:c0 + chunk_stories]
        upos = np.asarray(list(chain.from_iterable(s.upos for s in chunk)), dtype=str)
        word = np.char.lower(np.asarray(list(chain.from_iterable(s.word for s in chunk)), dtype=str))
        keep = ~np.isin(upos, list(exclude_tags))
        if not include_continuations:
            keep &= ~np.concatenate([np.asarray(s.continuation, dtype=bool) for s in chunk])
        t = np.full(len(upos), -1, dtype=np.int64)
        w = np.full(len(upos), -1, dtype=np.int64)
        t[keep] = _vocab_ids(upos[keep], tag_vocab)
        w[keep] = _vocab_ids(word[keep], word_vocab)
        tag_parts.append(t)
        word_parts.append(w)
    tags, tag_ids = _sorted_remap(np.concatenate(tag_parts), tag_vocab)
    words, word_ids = _sorted_remap(np.concatenate(word_parts), word_vocab)
    del tag_parts, word_parts
    ok = tag_ids >= 0
    pair = word_ids[ok].astype(np.int64) * len(tags) + tag_ids[ok]
    counts = np.bincount(pair, minlength=len(words) * len(tags)).reshape(len(words), len(tags))
    cuts = np.cumsum(lengths)[:-1]
    return CorpusLabels(tags=tags, words=words, tag_ids=np.split(tag_ids, cuts), word_ids=np.split(word_ids, cuts),
                        tag_counts=counts)


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
        """Keep the top k of the current buffer plus candidates ``values`` [unit, m] (story/pos alike)."""
        v = torch.cat([self.values, values.float()], 1)
        s = torch.cat([self.story, story], 1)
        p = torch.cat([self.pos, pos], 1)
        top, i = v.topk(self.k, dim=1)
        self.values, self.story, self.pos = top, s.gather(1, i), p.gather(1, i)

    def update(self, acts: Float[Tensor, "tok unit"], story: Int[Tensor, " tok"], pos: Int[Tensor, " tok"]) -> None:
        """Fold in one batch of token activations (one row per token)."""
        if acts.shape[0] == 0:
            return
        m = min(self.k, acts.shape[0])
        v, i = acts.T.topk(m, dim=1)  # [unit, m]
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
