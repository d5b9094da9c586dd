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
from tinyinterp.analysis.engine import pattern_hook, run_hooked

LN2 = math.log(2.0)


def length_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest-first so that ``len(batch) * longest <= batch_tokens`` (one story at least)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * lengths[cur[0]] > batch_tokens:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def _pad(seqs: list[np.ndarray], device) -> tuple[Tensor, Tensor]:
    """Right-pad id arrays with 0; returns tokens int64 [B, n] and validity mask int64 [B, n]."""
    n = max(len(s) for s in seqs)
    tokens = torch.zeros(len(seqs), n, dtype=torch.long)
    mask = torch.zeros(len(seqs), n, dtype=torch.long)
    for b, s in enumerate(seqs):
        tokens[b, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[b, : len(s)] = 1
    return tokens.to(device), mask.to(device)


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
    run_hooked(model, tokens, [(lambda name: name.endswith("attn.hook_pattern"), hook)], names, attention_mask=mask)


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


def calibrate(model, stories: StoryStore, lengths: np.ndarray, batch_tokens: int, seed: int, progress: bool) -> Calibration:
    """Offset profile and content dependence (JS, real vs shuffled) on ``stories`` (cut to ``lengths``)."""
    L, H, N = model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_ctx
    dev = model.cfg.device
    prof = torch.zeros(L, H, N, dtype=torch.float64)
    prof_rows = torch.zeros(N, dtype=torch.float64)
    js = torch.zeros(L, H, dtype=torch.float64)
    n_rows = 0.0
    rng = np.random.default_rng(seed + 1)
    real = [stories.tokens(i, int(n)) for i, n in enumerate(lengths.tolist())]
    shuffled = [shuffle_story(t, rng) for t in real]
    bar = _progress(2 * int(lengths.sum()), "heads: calibration", progress)
    for idx in length_batches(lengths.tolist(), max(1, batch_tokens // 2)):
        B = len(idx)
        tokens, mask = _pad([real[i] for i in idx] + [shuffled[i] for i in idx], dev)
        n = tokens.shape[1]
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
            ent = torch.special.entr
            row_js = (ent(0.5 * (real + shuf)) - 0.5 * ent(real) - 0.5 * ent(shuf)).sum(-1)  # [B, H, q]
            js[layer] += (einsum(row_js, rm, "b h q, b q -> h") / LN2).double().cpu()

        _run_patterns(model, tokens, mask, fn)
        bar.update(int(mask.sum()))
    bar.close()
    profile = prof / prof_rows.clamp(min=1.0)
    return Calibration(profile.numpy(), prof_rows.numpy(), (js / max(n_rows, 1.0)).numpy(), len(stories), int(n_rows))
