"""The one way the analyses run a model over a corpus: batching, streaming, hooks, single texts.

* :func:`plan_batches` groups stories of similar length into batches of about
  ``batch_tokens`` padded tokens (right padding; causal attention never lets padding touch
  real positions).
* :func:`iter_batches` validates the corpus against the model once and yields one
  :class:`PassBatch` (story indices, padded ids, mask) per batch, for one or more groups of
  stories (e.g. the selection and held-out halves of the neuron analysis).
* :func:`run_hooked` runs one forward with hooks and stops right after the last hook that is
  needed (no unembedding): the cheapest forward that feeds the hooks.
* :func:`run_pass` is the streaming runner: every :class:`PassConsumer` (head statistics,
  neuron statistics, ...) adds its hooks to each batch, which reduce the activations inside
  the hook, so nothing per token outlives the batch and memory does not grow with the corpus.
  :func:`~tinyinterp.analysis.heads.classify_heads` and
  :func:`~tinyinterp.analysis.neurons.find_pos_neurons` each run one pass;
  :func:`tinyinterp.analysis.pipeline.heads_and_neurons` runs both in a single pass.
* :func:`stream_activations` yields the cached activations of chosen hooks per batch
  (:class:`ActivationBatch`), for analyses that need the activations themselves (probes,
  examples, calibration samples).
* :func:`run_text` is the single-text forward the plots and the explorer use.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tinyinterp.analysis.corpus.store import StoryStore, TaggedCorpus
from tinyinterp.analysis.heap import trim_heap, trim_heap_every
from tinyinterp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

EMBED_LAYER = -1  # "layer" index of the embedding (the residual stream before block 0)
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_MLP_POST = re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$")
_STAGE = {"attn.hook_pattern": 0, "mlp.hook_post": 1}  # hook points after which a block may be cut short

Hook = tuple[str | Callable[[str], bool], Callable]


def mlp_hook(layer: int) -> str:
    """Name of the MLP neuron activations (after the nonlinearity) of ``layer``."""
    return f"blocks.{layer}.mlp.hook_post"


def mlp_hook_layer(hook: str) -> int | None:
    """The inverse of :func:`mlp_hook`: ``L`` for ``blocks.L.mlp.hook_post``, else None."""
    m = _MLP_POST.match(hook)
    return int(m.group(1)) if m else None


def resid_hook(layer: int) -> str:
    """Residual stream after block ``layer``; ``EMBED_LAYER`` (-1): token + position embedding."""
    return "blocks.0.hook_resid_pre" if layer == EMBED_LAYER else f"blocks.{layer}.hook_resid_post"


def pattern_hook(layer: int) -> str:
    """Attention pattern ``[batch, head, query, key]`` of ``layer``."""
    return f"blocks.{layer}.attn.hook_pattern"


@contextmanager
def eval_mode(*models) -> Iterator[None]:
    """Put ``models`` in eval mode for the block; restore their training flags afterwards."""
    was = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(models, was):
            m.train(w)


# ------------------------------------------------------------------------------------------ batching


def story_lengths(corpus: TaggedCorpus, n_ctx: int) -> np.ndarray:
    """Tokens per story as the model sees them (stories longer than ``n_ctx`` are truncated)."""
    return np.minimum(corpus.lengths(), n_ctx)


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


def pad_ids(seqs: Sequence[np.ndarray]) -> Int[Tensor, "batch pos"]:
    """Id arrays as one int64 tensor, right-padded with 0 to the longest."""
    tokens = torch.zeros((len(seqs), max(len(s) for s in seqs)), dtype=torch.long)
    for row, s in enumerate(seqs):  # one copy per story
        tokens[row, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return tokens


def padded_tokens(corpus: TaggedCorpus, stories: np.ndarray, lengths: np.ndarray) -> Int[Tensor, "batch pos"]:
    """Token ids of ``stories`` (each cut to ``lengths[i]``), right-padded with 0 to the longest."""
    if isinstance(corpus.stories, StoryStore):
        return torch.from_numpy(corpus.stories.padded("tokens", stories, int(lengths[stories].max()), fill=0))
    return pad_ids([corpus.story_tokens(int(i), int(lengths[i])) for i in np.asarray(stories).tolist()])


def length_mask(lengths: np.ndarray, n_pos: int) -> Bool[Tensor, "batch pos"]:
    """True on the first ``lengths[b]`` positions of each row."""
    return torch.arange(n_pos)[None, :] < torch.as_tensor(lengths)[:, None]


@dataclass
class PassBatch:
    """One batch of a pass: corpus story indices, the group they belong to, padded ids and mask."""

    stories: np.ndarray  # int64 [batch]; indices into corpus.stories
    group: int  # index into the pass's ``groups``
    lengths: np.ndarray  # int64 [batch]; tokens per story in this batch (cut to n_ctx)
    tokens: Int[Tensor, "batch pos"]  # on the model's device, padded with 0
    mask: Bool[Tensor, "batch pos"]  # on the model's device; False on padding


class PassConsumer(Protocol):
    hook_names: Sequence[str]  # every hook name it may ask for (decides where the forward stops)

    def batch_hooks(self, batch: PassBatch) -> list[Hook]:
        """Forward hooks for this batch; they reduce activations into the consumer's statistics."""
        ...


def _check_hooks(model, names: set[str]) -> None:
    unknown = sorted(names - set(model.hook_dict))
    if unknown:
        raise ConfigError(f"unknown hook name(s) {unknown[:3]}; see model.hook_dict for valid names")


def iter_batches(model, corpus: TaggedCorpus, groups: Sequence[np.ndarray] | None = None, batch_tokens: int = 4096,
                 progress: bool = False, desc: str = "analysis") -> Iterator[PassBatch]:
    """Validate the stories of ``groups`` (default: every story, one group) and yield their batches.

    Each group's stories are sorted by length and packed ``batch_tokens`` padded tokens a
    batch (at least one story). Stories longer than the model's ``n_ctx`` are cut to it (logged
    once); an empty story or a token id outside the vocabulary is a :class:`DataError`.
    """
    if batch_tokens < 1:
        raise ConfigError(f"batch_tokens={batch_tokens}: must be a positive number of tokens")
    n_ctx, dev, d_vocab = model.cfg.n_ctx, model.cfg.device, model.cfg.d_vocab
    full = corpus.lengths()
    lengths = np.minimum(full, n_ctx)
    groups = [np.arange(len(corpus))] if groups is None else [np.asarray(g, dtype=np.int64) for g in groups]
    used = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    if (lengths[used] < 1).any():
        raise DataError("corpus has an empty story (no tokens); drop it before analysis")
    n_long = int((full[used] > n_ctx).sum())
    if n_long:
        log.info("%d of %d stories are longer than n_ctx=%d tokens; truncated", n_long, len(used), n_ctx)
    plan = [(g, b) for g, idx in enumerate(groups) if len(idx)
            for b in plan_batches(lengths, max(batch_tokens, n_ctx), idx)]
    bar = tqdm(total=int(lengths[used].sum()), desc=desc, unit="tok", unit_scale=True, disable=not progress, leave=False)
    for g, idx in plan:
        tokens = padded_tokens(corpus, idx, lengths)  # [batch, pos]
        if int(tokens.max()) >= d_vocab or int(tokens.min()) < 0:
            raise DataError(f"corpus has token ids outside [0, {d_vocab}); tag it with this model's tokenizer")
        mask = length_mask(lengths[idx], tokens.shape[1])
        yield PassBatch(stories=idx, group=g, lengths=lengths[idx], tokens=tokens.to(dev), mask=mask.to(dev))
        bar.update(int(lengths[idx].sum()))
    bar.close()


# --------------------------------------------------------------------------------------- one forward


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


class StopForward(Exception):
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


def explicit_mask(model, mask: Tensor) -> Tensor | None:
    """The attention mask to pass TransformerLens: None under right padding (causal attention
    needs none); ``mask`` when the tokenizer pads left (TransformerLens would infer one from pad ids)."""
    left = getattr(getattr(model, "tokenizer", None), "padding_side", "right") == "left"
    return mask.long().to(model.cfg.device) if left else None


def run_hooked(model, tokens: Tensor, fwd_hooks: list, names: Sequence[str], trim_every: int = 1, **kwargs) -> None:
    """``model.run_with_hooks(tokens, return_type=None, ...)`` that stops right after the last of
    ``names`` has fired (e.g. skipping the MLP after the last attention pattern), or after the
    last block needed (``stop_at_layer``) when that cannot be told. The heap is trimmed after every
    ``trim_every``-th call (:func:`~tinyinterp.analysis.heap.trim_heap_every`)."""
    last = last_hook(names)
    hooks = list(fwd_hooks)
    if last is not None:
        def stop(act: Tensor, hook) -> None:
            raise StopForward

        hooks.append((last, stop))  # runs after the consumers' hooks on the same point
    else:
        kwargs.setdefault("stop_at_layer", _stop_layer(list(names), model.cfg.n_layers))
    try:
        with torch.inference_mode():
            model.run_with_hooks(tokens, return_type=None, fwd_hooks=hooks, **kwargs)
    except StopForward:
        pass
    trim_heap_every(trim_every)  # batch shapes vary: without trims, resident memory creeps up with the corpus size


# ----------------------------------------------------------------------------------------- runners


def run_pass(model, corpus: TaggedCorpus, consumers: Sequence[PassConsumer], groups: Sequence[np.ndarray] | None = None,
             batch_tokens: int = 4096, progress: bool = False, desc: str = "analysis", trim_every: int = 1) -> int:
    """Stream the stories of ``groups`` (default: every story, one group) through ``model`` once,
    feeding every consumer's hooks. Returns the number of tokens run (stories cut to ``n_ctx``).
    ``trim_every``: batches between heap trims (1 keeps a streaming pass's memory flat; a pass whose
    memory grows by design, e.g. keeping activations, can trim less often and skip the refaults)."""
    names = {h for c in consumers for h in c.hook_names}
    _check_hooks(model, names)
    stop = _stop_layer(sorted(names), model.cfg.n_layers)
    total = 0
    for batch in iter_batches(model, corpus, groups, batch_tokens, progress, desc):
        hooks = [h for c in consumers for h in c.batch_hooks(batch)]
        run_hooked(model, batch.tokens, hooks, sorted(names), trim_every, stop_at_layer=stop,
                   attention_mask=explicit_mask(model, batch.mask))
        total += int(batch.lengths.sum())
    trim_heap()
    return total


@dataclass
class ActivationBatch:
    stories: np.ndarray  # int64 [batch]; indices into corpus.stories
    tokens: Int[Tensor, "batch pos"]  # on the model's device
    mask: Bool[Tensor, "batch pos"]  # False on padding
    acts: dict[str, Float[Tensor, "batch pos ..."]]  # hook name -> activations

    @property
    def lengths(self) -> Int[Tensor, " batch"]:
        return self.mask.sum(1)


def stream_activations(
    model,
    corpus: TaggedCorpus,
    hooks: Sequence[str],
    batch_tokens: int = 8192,
    indices: Sequence[int] | None = None,
    progress: bool = False,
    desc: str = "activations",
) -> Iterator[ActivationBatch]:
    """Yield the activations at ``hooks`` for every story (or the stories in ``indices``), a batch at a time.

    Batches are those of :func:`iter_batches`; ``mask`` marks real tokens. Use :func:`run_pass`
    with a consumer instead when the activations can be reduced inside the hook.
    """
    names = sorted(set(hooks))
    _check_hooks(model, set(names))
    stop = _stop_layer(names, model.cfg.n_layers)
    groups = None if indices is None else [np.asarray(indices, dtype=np.int64)]
    for batch in iter_batches(model, corpus, groups, batch_tokens, progress, desc):
        cache: dict[str, Tensor] = {}

        def keep(act: Tensor, hook) -> None:
            cache[hook.name] = act

        run_hooked(model, batch.tokens, [(h, keep) for h in names], names, stop_at_layer=stop,
                   attention_mask=explicit_mask(model, batch.mask))
        yield ActivationBatch(stories=batch.stories, tokens=batch.tokens, mask=batch.mask, acts=cache)


def run_text(model, text: str, hooks: Sequence[str]) -> tuple[list[str], dict[str, Tensor]]:
    """One text through ``model`` (BOS first, cut to ``n_ctx``): its token strings and the activations
    of ``hooks`` without the batch dimension, on the CPU (the plots' and the explorer's forward)."""
    names = sorted(set(hooks))
    _check_hooks(model, set(names))
    tokens = model.to_tokens(text)[:, : model.cfg.n_ctx]
    cache: dict[str, Tensor] = {}

    def keep(act: Tensor, hook) -> None:
        cache[hook.name] = act[0].detach().cpu()

    run_hooked(model, tokens, [(h, keep) for h in names], names)
    return [model.tokenizer.decode([t]) for t in tokens[0].tolist()], cache
