"""Calibration of the head analysis, on a subset of stories: offset profiles and content dependence.

:func:`calibrate` runs each story twice in one batch, as written and with its tokens
shuffled (BOS kept in place), and reduces every layer's ``[batch, head, query, key]`` pattern
inside a forward hook to (1) the mean attention-by-offset profile of every head and (2) the
Jensen–Shannon divergence between each row on the real and on the shuffled story. Sums over
rows are kept in float64. Query row 0 (the BOS query, which can only attend to itself) is
excluded everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from einops import einsum
from torch import Tensor
from tqdm.auto import tqdm

from tinyinterp.analysis.corpus.store import StoryStore
from tinyinterp.analysis.engine import explicit_mask, length_mask, pad_ids, pattern_hook, plan_batches, run_hooked

LN2 = math.log(2.0)


def row_entropy(p: Tensor) -> Tensor:
    """``-sum_k p log p`` over the last axis (nats; 0 log 0 = 0) of non-negative float32 ``p``.

    On the CPU through numpy, whose vectorised ``log`` is ~4x torch's here (the elementwise
    entropy was the costliest reduction of the head pass): ``log`` only where ``p > 0``, into
    a scratch array. Elsewhere ``torch.special.entr``."""
    if p.device.type != "cpu" or p.dtype != torch.float32:
        return torch.special.entr(p).sum(-1)
    x = p.detach().contiguous().numpy()
    out = _scratch(x.size).reshape(x.shape)
    out.fill(0.0)
    np.log(x, out=out, where=x > 0)
    np.multiply(out, x, out=out)
    return torch.from_numpy(out.sum(-1)).neg_()


_SCRATCH: list[np.ndarray] = [np.empty(0, dtype=np.float32)]


def _scratch(size: int) -> np.ndarray:
    """A float32 buffer of ``size`` elements, reused across calls (a fresh pattern-sized array per layer and
    batch costs its page faults every time)."""
    if _SCRATCH[0].size < size:
        _SCRATCH[0] = np.empty(size, dtype=np.float32)
    return _SCRATCH[0][:size]


def _rowmask(mask: Tensor) -> Tensor:
    """float [B, n]: 1 for real query rows other than BOS."""
    rm = mask.float().clone()
    rm[:, 0] = 0.0
    return rm


def _run_patterns(model, tokens: Tensor, mask: Tensor, fn: Callable[[int, Tensor], None]) -> None:
    """Forward ``tokens`` calling ``fn(layer, pattern[B, H, q, k])`` for each layer; no logits."""
    def hook(pattern: Tensor, hook) -> None:
        fn(hook.layer(), pattern.float())

    names = [pattern_hook(layer) for layer in range(model.cfg.n_layers)]
    run_hooked(model, tokens, [(lambda name: name.endswith("attn.hook_pattern"), hook)], names,
               attention_mask=explicit_mask(model, mask))


def row_sum(pat: Tensor, w: Tensor) -> Tensor:
    """[H, q, k]: ``sum_b w[b, q] * pat[b, h, q, k]``, accumulated in place (far faster than einsum on CPU)."""
    out = pat[0] * w[0][None, :, None]
    for b in range(1, pat.shape[0]):
        out.addcmul_(pat[b], w[b][None, :, None])
    return out


def _progress(total_tokens: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total_tokens, desc=desc, unit="tok", unit_scale=True, disable=not enabled)


def shuffle_story(tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same tokens in a random order, BOS (position 0) kept in place."""
    out = tokens.copy()
    out[1:] = tokens[1:][rng.permutation(len(tokens) - 1)]
    return out


@dataclass
class Calibration:
    profile: np.ndarray  # [L, H, n_ctx] mean attention at offset d = q - k over query rows with q >= d
    profile_rows: np.ndarray  # [n_ctx] number of query rows that see offset d
    js: np.ndarray  # [L, H] mean JS divergence (bits) real vs shuffled tokens, per query row
    n_stories: int
    n_rows: int


def calibrate(model, stories: StoryStore, lengths: np.ndarray, batch_tokens: int, seed: int, progress: bool,
              own: np.ndarray | None = None, reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
              ) -> Calibration:
    """Offset profile and content dependence (JS, real vs shuffled) on ``stories`` (cut to ``lengths``).

    Split over processes (torchrun ranks): each runs only the stories flagged in ``own`` (bool, one per
    story; default: all) and ``reduce`` adds the processes' sums (e.g. an all-reduce); every story gets
    the shuffle it gets in one process, so the result is the one-process calibration up to float
    summation order."""
    L, H, N = model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_ctx
    dev = model.cfg.device
    prof = torch.zeros(L, H, N, dtype=torch.float64)
    prof_rows = torch.zeros(N, dtype=torch.float64)
    js = torch.zeros(L, H, dtype=torch.float64)
    n_rows = 0.0
    rng = np.random.default_rng(seed + 1)
    own = np.ones(len(lengths), dtype=bool) if own is None else np.asarray(own, dtype=bool)
    real, shuffled = {}, {}
    for i, n in enumerate(lengths.tolist()):  # one shuffle per story in order, whoever runs it
        if own[i]:
            real[i] = stories.tokens(i, int(n))
            shuffled[i] = shuffle_story(real[i], rng)
        else:
            rng.permutation(int(n) - 1)  # the draw shuffle_story makes for this story
    mine = np.nonzero(own)[0]
    bar = _progress(2 * int(lengths[mine].sum()), "heads: calibration", progress)
    for idx in plan_batches(lengths, max(1, batch_tokens // 2), mine):  # each story runs twice: real and shuffled
        B = len(idx)
        seqs = [real[i] for i in idx] + [shuffled[i] for i in idx]
        tokens = pad_ids(seqs).to(dev)
        n = tokens.shape[1]
        mask = length_mask(np.array([len(t) for t in seqs]), n).to(dev)
        rm = _rowmask(mask[:B])  # [B, n]
        q = torch.arange(n, device=dev)
        diff = q[:, None] - q[None, :]  # read as [q, d]: key index q - d, valid where d <= q
        gather_idx = diff.clamp(min=0)  # [q, d]
        dvalid = (diff >= 0).float()  # [q, d]
        prof_rows[:n] += einsum(rm, dvalid, "b q, q d -> d").double().cpu()
        n_rows += float(rm.sum())

        def fn(layer: int, pat: Tensor) -> None:
            real, shuf = pat[:B], pat[B:]  # [B, H, q, k]; rows are masked after reducing over keys
            col = row_sum(real, rm)  # [H, q, k] summed over the valid rows
            prof[layer, :, :n] += (col.gather(2, gather_idx.expand(H, n, n)) * dvalid).sum(1).double().cpu()
            row_js = row_entropy(0.5 * (real + shuf)) - 0.5 * row_entropy(real) - 0.5 * row_entropy(shuf)  # [B, H, q]
            js[layer] += (einsum(row_js, rm, "b h q, b q -> h") / LN2).double().cpu()

        _run_patterns(model, tokens, mask, fn)
        bar.update(int(mask.sum()))
    bar.close()
    if reduce is not None:
        sums = reduce({"prof": prof, "prof_rows": prof_rows, "js": js, "n_rows": torch.tensor([n_rows], dtype=torch.float64)})
        prof, prof_rows, js, n_rows = sums["prof"], sums["prof_rows"], sums["js"], float(sums["n_rows"][0])
    profile = prof / prof_rows.clamp(min=1.0)
    return Calibration(profile.numpy(), prof_rows.numpy(), (js / max(n_rows, 1.0)).numpy(), len(stories), int(n_rows))
