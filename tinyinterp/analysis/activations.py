"""Stream a tagged corpus through a model a batch at a time, caching only the hooks asked for.

:func:`stream_activations` groups stories of similar length into batches of about
``batch_tokens`` tokens (right-padded to the batch's longest story, padding masked), runs
``run_with_cache`` with a ``names_filter`` for just the requested hooks, stops the forward
pass after the last block it needs (no unembedding), and yields one :class:`ActivationBatch`
at a time. Callers fold each batch into fixed-size statistics, so memory does not grow with
the corpus. :class:`TopKBuffer` keeps the k largest activations per unit (with story and
position) in fixed memory and merges across shards. :func:`label_corpus` turns a corpus's
tags into integer arrays once, so per-batch work stays vectorised.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tinyinterp.analysis.corpus import BOS_TAG, SPACE_TAG, StoryStore, TaggedCorpus
from tinyinterp.analysis.heap import trim_heap
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
    return np.minimum(corpus.lengths(), n_ctx)


def batch_tokens_array(corpus: TaggedCorpus, stories: np.ndarray, lengths: np.ndarray) -> Int[Tensor, "batch pos"]:
    """Token ids of ``stories`` (each cut to ``lengths[i]``), right-padded with 0 to the longest."""
    n_pos = int(lengths[stories].max())
    if isinstance(corpus.stories, StoryStore):
        return torch.from_numpy(corpus.stories.padded("tokens", stories, n_pos, fill=0))
    tokens = torch.zeros((len(stories), n_pos), dtype=torch.long)
    for row, i in enumerate(stories):  # one copy per story
        tokens[row, : lengths[i]] = torch.as_tensor(corpus.story_tokens(int(i), int(lengths[i])))
    return tokens


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


_STAGE = {"attn.hook_pattern": 0, "mlp.hook_post": 1}  # hook points after which a block may be cut short


class _StopForward(Exception):
    """Raised by the last hook a pass needs: the rest of the forward is skipped."""


def last_hook(hooks: Sequence[str]) -> str | None:
    """The hook of ``hooks`` that fires last, when each is a block's ``attn.hook_pattern`` or
    ``mlp.hook_post`` (else None: then the forward cannot be cut short after it)."""
    ranked = []
    for h in hooks:
        m = _BLOCK.match(h)
        stage = _STAGE.get(h[m.end():]) if m else None
        if stage is None:
            return None
        ranked.append(((int(m.group(1)), stage), h))
    return max(ranked)[1] if ranked else None


def run_hooked(model, tokens: Tensor, fwd_hooks: list, names: Sequence[str], **kwargs) -> None:
    """``model.run_with_hooks(tokens, return_type=None, ...)`` that stops right after the last of
    ``names`` has fired (e.g. skipping the MLP after the last attention pattern), or after the
    last block needed (``stop_at_layer``) when that cannot be told."""
    last = last_hook(names)
    hooks = list(fwd_hooks)
    if last is not None:
        def stop(act: Tensor, hook) -> None:
            raise _StopForward

        hooks.append((last, stop))  # runs after the consumers' hooks on the same point
    else:
        kwargs.setdefault("stop_at_layer", _stop_layer(list(names), model.cfg.n_layers))
    try:
        with torch.inference_mode():
            model.run_with_hooks(tokens, return_type=None, fwd_hooks=hooks, **kwargs)
    except _StopForward:
        pass
    trim_heap()  # batch shapes vary: without this, resident memory creeps up with the corpus size


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
    n_long = int((corpus.lengths() > n_ctx).sum())
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
        tokens = batch_tokens_array(corpus, idx, lengths)  # [batch, pos]
        mask = torch.arange(n_pos)[None, :] < torch.as_tensor(lengths[idx])[:, None]  # [batch, pos]
        if int(tokens.max()) >= model.cfg.d_vocab or int(tokens.min()) < 0:
            raise DataError(f"corpus has token ids outside [0, {model.cfg.d_vocab}); tag it with this model's tokenizer")
        cache: dict[str, Tensor] = {}

        def keep(act: Tensor, hook) -> None:
            cache[hook.name] = act

        run_hooked(model, tokens.to(device), [(h, keep) for h in sorted(names)], sorted(names), stop_at_layer=stop,
                   attention_mask=mask.long().to(device) if explicit_mask else None)
        bar.update(int(lengths[idx].sum()))
        yield ActivationBatch(stories=idx, tokens=tokens, mask=mask.to(device), acts=cache)
    bar.close()


@dataclass
class CorpusLabels:
    """Integer tags and word types per token; -1 marks tokens left out of the analysis."""

    tags: list[str]  # tag vocabulary (sorted); tag id i means tags[i]
    words: list[str]  # word-type vocabulary (lower-cased words)
    tag_ids: list[np.ndarray]  # per story [n] (views of flat_tags; int8/16/32); -1: BOS/space/excluded tag/continuation
    word_ids: list[np.ndarray]  # per story [n] (int8/16/32); -1 where tag_ids is -1
    tag_counts: np.ndarray  # int64 [n_words, n_tags]: how often each word type carries each tag
    flat_tags: np.ndarray | None = None  # [n_tokens]: tag_ids of every story, concatenated
    flat_words: np.ndarray | None = None  # [n_tokens]
    starts: np.ndarray | None = None  # int64 [n_stories + 1]: story i is flat rows starts[i]:starts[i+1]

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

    def ambiguous(self, min_count: int = 1) -> np.ndarray:
        """bool [n_words, n_tags]: word takes this tag (>= min_count times) and at least one other."""
        takes = self.tag_counts >= min_count
        return takes & (takes.sum(1, keepdims=True) >= 2)


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
    cuts = starts[1:-1]
    return CorpusLabels(tags=tags, words=words, tag_ids=np.split(tag_ids, cuts), word_ids=np.split(word_ids, cuts),
                        tag_counts=counts.reshape(len(words), len(tags)), flat_tags=tag_ids, flat_words=word_ids,
                        starts=starts)


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
