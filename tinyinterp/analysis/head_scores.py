"""Streaming attention statistics for head classification (used by :mod:`tinyinterp.analysis.heads`).

Every pass runs the model over length-sorted, right-padded batches with one forward hook
on ``blocks.*.attn.hook_pattern`` (``run_with_hooks``, logits skipped) and reduces each
layer's ``[batch, head, query, key]`` pattern to fixed-size per-head sums inside the hook,
so at most one layer's pattern is alive and memory does not grow with the corpus.
Query row 0 (the BOS query, which can only attend to itself) is excluded everywhere.

* :func:`calibrate` — on a subset: the mean attention-by-offset profile of every head and
  the Jensen–Shannon divergence between each row on the real story and on the same story
  with its tokens shuffled (BOS kept in place); both versions run in the same batch.
* :func:`main_pass` — on all stories: locality scores, the sufficient statistics of the
  positional R², observed and profile-predicted attention mass per key category, per-token
  mass, and the running sums of a sign-flip randomisation test (one random ±1 per story
  and permutation, so the null distribution is accumulated online).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from einops import einsum, rearrange
from torch import Tensor
from tqdm.auto import tqdm

from tinyinterp.analysis.corpus import TaggedStory

UPOS_CATEGORIES = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
                   "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X", "SPACE")
KEY_CATEGORIES = (*UPOS_CATEGORIES, "NAME")  # NAME: PROPN or a PERSON entity
REL_CATEGORIES = ("SAME_TOKEN", "INDUCTION")  # depend on the query: same id as the query; follows an earlier copy of it
CATEGORIES = (*KEY_CATEGORIES, *REL_CATEGORIES)
_CAT_INDEX = {c: i for i, c in enumerate(UPOS_CATEGORIES)}
_LN2 = math.log(2.0)


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

    with torch.inference_mode():
        model.run_with_hooks(tokens, return_type=None, attention_mask=mask,
                             fwd_hooks=[(lambda name: name.endswith("attn.hook_pattern"), hook)])


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


def calibrate(model, stories: list[TaggedStory], batch_tokens: int, seed: int, progress: bool) -> Calibration:
    """Offset profile and content dependence (JS, real vs shuffled) on ``stories``."""
    L, H, N = model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_ctx
    dev = model.cfg.device
    prof = torch.zeros(L, H, N, dtype=torch.float64)
    prof_rows = torch.zeros(N, dtype=torch.float64)
    js = torch.zeros(L, H, dtype=torch.float64)
    n_rows = 0.0
    rng = np.random.default_rng(seed + 1)
    shuffled = [shuffle_story(s.tokens, rng) for s in stories]
    bar = _progress(2 * sum(len(s) for s in stories), "heads: calibration", progress)
    for idx in length_batches([len(s) for s in stories], max(1, batch_tokens // 2)):
        B = len(idx)
        tokens, mask = _pad([stories[i].tokens for i in idx] + [shuffled[i] for i in idx], dev)
        n = tokens.shape[1]
        rm = _rowmask(mask[:B])  # [B, n]
        q = torch.arange(n, device=dev)
        diff = q[:, None] - q[None, :]  # read as [q, d]: key index q - d, valid where d <= q
        gather_idx = diff.clamp(min=0)  # [q, d]
        dvalid = (diff >= 0).float()  # [q, d]
        prof_rows[:n] += einsum(rm, dvalid, "b q, q d -> d").double().cpu()
        n_rows += float(rm.sum())

        def fn(layer: int, pat: Tensor) -> None:
            real = pat[:B] * rm[:, None, :, None]  # [B, H, q, k], invalid rows zeroed
            shuf = pat[B:] * rm[:, None, :, None]
            by_off = real.gather(3, gather_idx.expand(B, H, n, n)) * dvalid  # [B, H, q, d]
            prof[layer, :, :n] += by_off.sum((0, 2)).double().cpu()
            mid = 0.5 * (real + shuf)
            jsd = (torch.special.entr(mid) - 0.5 * torch.special.entr(real) - 0.5 * torch.special.entr(shuf)).sum((0, 2, 3))
            js[layer] += (jsd / _LN2).double().cpu()

        _run_patterns(model, tokens, mask, fn)
        bar.update(int(mask.sum()))
    bar.close()
    profile = prof / prof_rows.clamp(min=1.0)
    return Calibration(profile.numpy(), prof_rows.numpy(), (js / max(n_rows, 1.0)).numpy(), len(stories), int(n_rows))


def predicted_pattern(profile: Tensor, n: int) -> Tensor:
    """[H, q, k] positional prediction: ``profile[h, q - k]`` renormalised over the visible keys ``k <= q``."""
    q = torch.arange(n, device=profile.device)
    off = q[:, None] - q[None, :]
    pm = profile[:, off.clamp(min=0)] * (off >= 0)  # [H, q, k]
    z = pm.sum(-1, keepdim=True)
    uniform = (off >= 0).float() / (q[:, None] + 1).float()
    return torch.where(z > 0, pm / z.clamp(min=1e-30), uniform)


def _key_categories(story: TaggedStory, n: int) -> np.ndarray:
    """float32 [n, C_key] multi-hot key categories (zero at BOS and padding)."""
    m = len(story)
    out = np.zeros((n, len(KEY_CATEGORIES)), dtype=np.float32)
    idx = np.array([_CAT_INDEX.get(u, -1) for u in story.upos], dtype=np.int64)
    rows = np.nonzero(idx >= 0)[0]
    out[rows, idx[rows]] = 1.0
    out[:m, -1] = [u == "PROPN" or e == "PERSON" for u, e in zip(story.upos, story.ent)]
    out[0] = 0.0
    return out


@dataclass
class MainStats:
    """Per-head sums over all query rows (row 0 excluded); divide by ``n_rows`` for means."""

    n_stories: int
    n_rows: float
    inv_rows: float  # sum over rows of 1 / (q + 1): uniform-row baseline of the R^2
    bos: np.ndarray  # [L, H] attention on key 0
    prev: np.ndarray  # [L, H] attention on k = q - 1
    near: np.ndarray  # [L, H] attention on offsets 0..near_offsets
    dist: np.ndarray  # [L, H] attention-weighted distance q - k
    entropy: np.ndarray  # [L, H] row entropy in bits
    entropy_norm: np.ndarray  # [L, H] row entropy / log2(q + 1)
    sq: np.ndarray  # [L, H] sum of A^2
    cross: np.ndarray  # [L, H] sum of A * prediction
    pred_sq: np.ndarray  # [L, H] sum of prediction^2
    obs: np.ndarray  # [L, H, C] attention mass on each category
    exp: np.ndarray  # [L, H, C] profile-predicted mass on each category
    flips: np.ndarray  # [P, L, H, C] sign-flipped sums of per-story (obs - exp)
    cat_keys: np.ndarray  # [C] number of (row, key) pairs in each category, over the visible keys
    tok_obs: np.ndarray  # [L, H, V] attention mass received by each key token id (BOS position excluded)
    tok_exp: np.ndarray  # [L, H, V] profile-predicted mass per key token id
    tok_count: np.ndarray  # [V] occurrences of each token id as a key (BOS position excluded)


def main_pass(model, stories: list[TaggedStory], profile: np.ndarray, batch_tokens: int, n_perm: int,
              near_offsets: int, seed: int, progress: bool) -> MainStats:
    """All per-head sums over ``stories``; ``profile`` is the calibrated ``[L, H, n_ctx]`` offset profile."""
    L, H, V = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_vocab
    C, CK = len(CATEGORIES), len(KEY_CATEGORIES)
    dev = model.cfg.device
    prof_t = torch.as_tensor(profile, dtype=torch.float32, device=dev)
    z = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
    acc = {k: z(L, H) for k in ("bos", "prev", "near", "dist", "entropy", "entropy_norm", "sq", "cross", "pred_sq")}
    obs, exp, flips = z(L, H, C), z(L, H, C), z(n_perm, L, H, C)
    tok_obs, tok_exp, tok_count, cat_keys = z(L, H, V), z(L, H, V), z(V), z(C)
    n_rows = inv_rows = 0.0
    gen = torch.Generator().manual_seed(seed)
    bar = _progress(sum(len(s) for s in stories), "heads: scoring", progress)
    for idx in length_batches([len(s) for s in stories], batch_tokens):
        batch = [stories[i] for i in idx]
        B = len(batch)
        tokens, mask = _pad([s.tokens for s in batch], dev)
        n = tokens.shape[1]
        rm = _rowmask(mask)  # [B, q]
        km = rm  # keys other than BOS and padding: the same mask, indexed by k
        q = torch.arange(n, device=dev)
        off = q[:, None] - q[None, :]  # [q, k]
        before = (off > 0).float()  # k < q
        near = ((off >= 0) & (off <= near_offsets)).float()
        invlog = torch.where(q >= 1, 1.0 / torch.log2((q + 1).float()), torch.zeros((), device=dev))
        keycats = torch.as_tensor(np.stack([_key_categories(s, n) for s in batch]), device=dev)  # [B, k, C_key]
        same = (tokens[:, :, None] == tokens[:, None, :]).float() * before * rm[:, :, None] * km[:, None, :]
        prev_tok = torch.cat([torch.full_like(tokens[:, :1], -1), tokens[:, :-1]], 1)  # token before each key
        prev_tok[:, 1] = -1  # the token before key 1 is BOS: not an earlier occurrence
        induct = (tokens[:, :, None] == prev_tok[:, None, :]).float() * before * rm[:, :, None] * km[:, None, :]
        eps = (torch.randint(0, 2, (n_perm, B), generator=gen) * 2 - 1).float().to(dev)  # [P, B] random signs
        visible = rm[:, :, None] * (off >= 0).float()  # [B, q, k]
        cat_keys[:CK] += einsum(visible.sum(1) * km, keycats, "b k, b k c -> c").double().cpu()
        cat_keys[CK] += float(same.sum())
        cat_keys[CK + 1] += float(induct.sum())
        flat_tok = rearrange(tokens, "b k -> (b k)")
        tok_count.index_add_(0, flat_tok.cpu(), rearrange(km, "b k -> (b k)").double().cpu())
        n_rows += float(rm.sum())
        inv_rows += float((rm / (q + 1).float()).sum())

        def fn(layer: int, pat: Tensor) -> None:
            a = pat * rm[:, None, :, None]  # [B, H, q, k], invalid rows zeroed
            pred = predicted_pattern(prof_t[layer], n)  # [H, q, k]
            ent = torch.special.entr(a).sum(-1) / _LN2  # [B, H, q] bits
            sums = {
                "bos": a[..., 0].sum((0, 2)),
                "prev": a.diagonal(offset=-1, dim1=2, dim2=3).sum((0, 2)),
                "near": einsum(a, near, "b h q k, q k -> h"),
                "dist": einsum(a, off.clamp(min=0).float(), "b h q k, q k -> h"),
                "entropy": ent.sum((0, 2)),
                "entropy_norm": einsum(ent, invlog, "b h q, q -> h"),
                "sq": a.square().sum((0, 2, 3)),
                "cross": einsum(a, pred, "b h q k, h q k -> h"),
                "pred_sq": einsum(rm, pred.square().sum(-1), "b q, h q -> h"),
            }
            for k, v in sums.items():
                acc[k][layer] += v.double().cpu()
            col_obs = a.sum(2) * km[:, None, :]  # [B, H, k] mass each key receives
            col_exp = einsum(rm, pred, "b q, h q k -> b h k") * km[:, None, :]
            o = torch.cat([einsum(col_obs, keycats, "b h k, b k c -> b h c"),
                           einsum(a, same, "b h q k, b q k -> b h")[..., None],
                           einsum(a, induct, "b h q k, b q k -> b h")[..., None]], -1)  # [B, H, C]
            e = torch.cat([einsum(col_exp, keycats, "b h k, b k c -> b h c"),
                           einsum(pred, same, "h q k, b q k -> b h")[..., None],
                           einsum(pred, induct, "h q k, b q k -> b h")[..., None]], -1)
            obs[layer] += o.sum(0).double().cpu()
            exp[layer] += e.sum(0).double().cpu()
            flips[:, layer] += einsum(eps, o - e, "p b, b h c -> p h c").double().cpu()
            tok_obs[layer].index_add_(1, flat_tok.cpu(), rearrange(col_obs, "b h k -> h (b k)").double().cpu())
            tok_exp[layer].index_add_(1, flat_tok.cpu(), rearrange(col_exp, "b h k -> h (b k)").double().cpu())

        _run_patterns(model, tokens, mask, fn)
        bar.update(int(mask.sum()))
    bar.close()
    np_acc = {k: v.numpy() for k, v in acc.items()}
    return MainStats(len(stories), n_rows, inv_rows, obs=obs.numpy(), exp=exp.numpy(), flips=flips.numpy(),
                     cat_keys=cat_keys.numpy(), tok_obs=tok_obs.numpy(), tok_exp=tok_exp.numpy(),
                     tok_count=tok_count.numpy(), **np_acc)


def detector_scores(model, stories: list[TaggedStory], exclude_bos: bool, exclude_current_token: bool) -> dict[str, np.ndarray]:
    """TransformerLens ``detect_head`` scores ([L, H] each), averaged over ``stories``.

    ``detect_head`` re-tokenises the text, so each story is cut to fewer than ``n_ctx``
    tokens (its limit) and skipped if re-tokenising does not give the same length. It is
    given a fresh copy of the cache for every head type, because its ``exclude_*``
    options zero entries of the cache it is handed in some TransformerLens versions.
    """
    from transformer_lens import ActivationCache
    from transformer_lens.head_detector import detect_head

    names = ("previous_token_head", "duplicate_token_head", "induction_head")
    sums = {k: np.zeros((model.cfg.n_layers, model.cfg.n_heads)) for k in names}
    used = 0
    for s in stories:
        m = min(len(s), model.cfg.n_ctx - 1)
        if m < 2:
            continue
        text = s.text[: int(s.offsets[m - 1, 1])]
        toks = model.to_tokens(text)
        if toks.shape[-1] != m:
            continue
        with torch.inference_mode():
            _, cache = model.run_with_cache(toks, remove_batch_dim=True,
                                            names_filter=lambda name: name.endswith("attn.hook_pattern"))
        for k in names:
            copy = ActivationCache({key: v.clone() for key, v in cache.items()}, model)
            sums[k] += detect_head(model, text, k, cache=copy, exclude_bos=exclude_bos,
                                   exclude_current_token=exclude_current_token).cpu().numpy()
        used += 1
    return {k: v / used for k, v in sums.items()} if used else {}

