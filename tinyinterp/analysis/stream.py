"""One streaming forward pass over a corpus that feeds several analyses at once.

An analysis that folds activations into fixed-size statistics is a :class:`PassConsumer`:
for each batch it returns the forward hooks it wants (``batch_hooks``), which reduce the
activations inside the hook, so nothing per token outlives the batch. :func:`run_pass`
groups the stories (e.g. the selection and held-out halves of the neuron analysis), sorts
each group by length, packs batches of about ``batch_tokens`` padded tokens, and runs one
``run_with_hooks`` per batch with every consumer's hooks, stopping right after the last hook
any consumer needs (no unembedding; :func:`~tinyinterp.analysis.activations.run_hooked`). :func:`classify_heads` and :func:`find_pos_neurons` each
run one pass; :func:`tinyinterp.analysis.pipeline.heads_and_neurons` runs both analyses in a
single pass, so the model's forward is paid once.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor
from tqdm.auto import tqdm

from tinyinterp.analysis.activations import _stop_layer, plan_batches, run_hooked
from tinyinterp.analysis.corpus import TaggedCorpus
from tinyinterp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Hook = tuple[str | Callable[[str], bool], Callable]


@dataclass
class PassBatch:
    """One batch of a pass: corpus story indices, the group they belong to, padded ids and mask."""

    stories: np.ndarray  # int64 [batch]; indices into corpus.stories
    group: int  # index into run_pass's ``groups``
    lengths: np.ndarray  # int64 [batch]; tokens per story in this batch (cut to n_ctx)
    tokens: Int[Tensor, "batch pos"]  # on the model's device, padded with 0
    mask: Bool[Tensor, "batch pos"]  # on the model's device; False on padding


class PassConsumer(Protocol):
    hook_names: Sequence[str]  # every hook name it may ask for (decides where the forward stops)

    def batch_hooks(self, batch: PassBatch) -> list[Hook]:
        """Forward hooks for this batch; they reduce activations into the consumer's statistics."""
        ...


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


def plan_pass(lengths: np.ndarray, groups: Sequence[np.ndarray], batch_tokens: int, n_ctx: int) -> list[tuple[int, np.ndarray]]:
    """``(group, story indices)`` per batch: stories of each group sorted by length, ``batch_tokens`` padded tokens a batch."""
    out = []
    for g, idx in enumerate(groups):
        if len(idx):
            out += [(g, b) for b in plan_batches(lengths, max(batch_tokens, n_ctx), idx)]
    return out


def run_pass(model, corpus: TaggedCorpus, consumers: Sequence[PassConsumer], groups: Sequence[np.ndarray] | None = None,
             batch_tokens: int = 4096, progress: bool = False, desc: str = "analysis") -> int:
    """Stream the stories of ``groups`` (default: every story, one group) through ``model`` once.

    Stories longer than the model's ``n_ctx`` are cut to it. Returns the number of tokens run.
    """
    if batch_tokens < 1:
        raise ConfigError(f"batch_tokens={batch_tokens}: must be a positive number of tokens")
    names = {h for c in consumers for h in c.hook_names}
    unknown = sorted(names - set(model.hook_dict))
    if unknown:
        raise ConfigError(f"unknown hook name(s) {unknown[:3]}; see model.hook_dict for valid names")
    n_ctx, dev = model.cfg.n_ctx, model.cfg.device
    full = corpus.lengths()
    lengths = np.minimum(full, n_ctx)
    groups = [np.arange(len(corpus))] if groups is None else [np.asarray(g, dtype=np.int64) for g in groups]
    used = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    if (lengths[used] < 1).any():
        raise DataError("corpus has an empty story (no tokens); drop it before analysis")
    n_long = int((full[used] > n_ctx).sum())
    if n_long:
        log.info("%d of %d stories are longer than n_ctx=%d tokens; truncated", n_long, len(used), n_ctx)
    stop = _stop_layer(sorted(names), model.cfg.n_layers)
    # right padding under causal attention needs no mask; a left-padding tokenizer would make
    # TransformerLens infer one from pad ids, so then pass ours explicitly
    explicit_mask = getattr(getattr(model, "tokenizer", None), "padding_side", "right") == "left"
    store = corpus.packed() if not isinstance(corpus.stories, list) else None
    plan = plan_pass(lengths, groups, batch_tokens, n_ctx)
    total = int(lengths[used].sum())
    bar = tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=not progress, leave=False)
    d_vocab = model.cfg.d_vocab
    for g, idx in plan:
        n_pos = int(lengths[idx].max())
        if store is not None:
            tokens = torch.from_numpy(store.padded("tokens", idx, n_pos, fill=0))
        else:
            tokens = torch.zeros((len(idx), n_pos), dtype=torch.long)
            for row, i in enumerate(idx.tolist()):
                tokens[row, : lengths[i]] = torch.as_tensor(corpus.story_tokens(i, int(lengths[i])))
        if int(tokens.max()) >= d_vocab or int(tokens.min()) < 0:
            raise DataError(f"corpus has token ids outside [0, {d_vocab}); tag it with this model's tokenizer")
        mask = torch.arange(n_pos)[None, :] < torch.as_tensor(lengths[idx])[:, None]
        batch = PassBatch(stories=idx, group=g, lengths=lengths[idx], tokens=tokens.to(dev), mask=mask.to(dev))
        hooks = [h for c in consumers for h in c.batch_hooks(batch)]
        run_hooked(model, batch.tokens, hooks, sorted(names), stop_at_layer=stop,
                   attention_mask=batch.mask.long() if explicit_mask else None)
        bar.update(int(batch.lengths.sum()))
    bar.close()
    return total
