"""The main streaming pass of the head analysis: per-head sums over every story.

:class:`MainPass` is a :class:`~tinyinterp.analysis.engine.PassConsumer`: one forward hook
on ``blocks.*.attn.hook_pattern`` (the forward stops right after the last layer's pattern)
reduces each layer's ``[batch, head, query, key]`` pattern to fixed-size per-head sums inside
the hook, so at most one layer's pattern is alive and memory does not grow with the corpus.
The reductions are matrix products and in-place accumulations (einsum over a 4-D pattern is
several times slower on CPU); sums over rows are kept in float64. Query row 0 (the BOS
query, which can only attend to itself) is excluded everywhere.

It accumulates locality scores, the sufficient statistics of the positional R², observed
and profile-predicted attention mass per key category (the profile comes from
:func:`~tinyinterp.analysis.heads.calibration.calibrate`), per-token mass, and the running
sums of a sign-flip randomisation test (one random ±1 per story and permutation, a fixed
function of the story index (:func:`story_signs`), so the null distribution is accumulated
online and does not depend on the batching).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from einops import einsum, rearrange
from torch import Tensor

from tinyinterp.analysis.corpus.store import StoryStore
from tinyinterp.analysis.engine import pattern_hook
from tinyinterp.analysis.heads.calibration import LN2, row_entropy, row_sum

UPOS_CATEGORIES = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
                   "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X", "SPACE")
KEY_CATEGORIES = (*UPOS_CATEGORIES, "NAME")  # NAME: PROPN or a PERSON entity
REL_CATEGORIES = ("SAME_TOKEN", "INDUCTION")  # depend on the query: same id as the query; follows an earlier copy of it
CATEGORIES = (*KEY_CATEGORIES, *REL_CATEGORIES)
_CAT_INDEX = {c: i for i, c in enumerate(UPOS_CATEGORIES)}


def _col_mass(pat: Tensor, w: Tensor) -> Tensor:
    """[B, H, k]: attention each key receives from the rows weighted by ``w`` [B, q] (a matrix product)."""
    return torch.matmul(w[:, None, None, :], pat)[:, :, 0]  # [B, H, 1, q] @ [B, H, q, k]


def predicted_pattern(profile: Tensor, n: int) -> Tensor:
    """[H, q, k] positional prediction: ``profile[h, q - k]`` renormalised over the visible keys ``k <= q``."""
    q = torch.arange(n, device=profile.device)
    off = q[:, None] - q[None, :]
    pm = profile[:, off.clamp(min=0)] * (off >= 0)  # [H, q, k]
    z = pm.sum(-1, keepdim=True)
    uniform = (off >= 0).float() / (q[:, None] + 1).float()
    return torch.where(z > 0, pm / z.clamp(min=1e-30), uniform)


class PredictedPatterns:
    """``predicted_pattern(profile[layer], n)`` for any length ``n``: a row depends on its query position
    only, so one ``n_ctx``-sized table per layer, built once, is sliced (when the tables fit in ``max_bytes``;
    otherwise each call computes its own)."""

    def __init__(self, profile: Tensor, max_bytes: int = 64 * 2 ** 20):
        L, H, N = profile.shape
        self.profile = profile
        self.full = [predicted_pattern(profile[x], N) for x in range(L)] if L * H * N * N * 4 <= max_bytes else None

    def __call__(self, layer: int, n: int) -> Tensor:
        if self.full is None:
            return predicted_pattern(self.profile[layer], n)
        return self.full[layer][:, :n, :n].contiguous()  # [H, q, k]


def _category_tables(stories: StoryStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables from the store's codes: UPOS code -> UPOS category (-1: none), is-PROPN, is-PERSON."""
    upos, ent = stories.vocab["upos"], stories.vocab["ent"]
    cat = np.array([_CAT_INDEX.get(u, -1) for u in upos] + [-1], dtype=np.int64)  # last entry: padding (-1)
    propn = np.array([u == "PROPN" for u in upos] + [False])
    person = np.array([e == "PERSON" for e in ent] + [False])
    return cat, propn, person


def _key_categories(stories: StoryStore, idx: list[int], n: int, tables: tuple[np.ndarray, ...]) -> np.ndarray:
    """float32 [B, n, C_key] multi-hot key categories of a batch (zero at BOS and padding)."""
    cat_t, propn_t, person_t = tables
    upos = stories.padded("upos", idx, n)  # [B, n], -1 on padding (addresses the tables' last entry)
    ent = stories.padded("ent", idx, n)
    out = np.zeros((len(idx), n, len(KEY_CATEGORIES)), dtype=np.float32)
    cat = cat_t[upos]
    b, p = np.nonzero(cat >= 0)
    out[b, p, cat[b, p]] = 1.0
    out[..., -1] = propn_t[upos] | person_t[ent]
    out[:, 0] = 0.0
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


def story_signs(stories: np.ndarray, n_perm: int, seed: int) -> np.ndarray:
    """float32 [n_perm, len(stories)] random ±1, a fixed function of (seed, story index, permutation).

    Keyed by story rather than drawn in batch order, so the sign-flip test does not depend on
    how stories are batched (a pass shared with other analyses gives the same p-values).
    """
    def mix(z: np.ndarray) -> np.ndarray:  # splitmix64 finaliser (uint64 arithmetic wraps)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    key = mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    cell = np.asarray(stories, dtype=np.uint64)[None, :] * np.uint64(n_perm) + np.arange(n_perm, dtype=np.uint64)[:, None]
    bits = mix(cell ^ key) >> np.uint64(63)
    return bits.astype(np.float32) * 2.0 - 1.0


@dataclass
class _BatchTensors:
    """What every layer's reduction of one batch shares (built once per batch by :meth:`MainPass._prepare`)."""

    n: int  # padded length
    rm: Tensor  # float [B, q]: real query rows other than BOS
    rm64: Tensor  # rm in float64
    km: Tensor  # float [B, k]: keys other than BOS and padding
    keycats: Tensor  # float [B, k, C_key]: multi-hot key categories
    flat_tok: Tensor  # int64 [B * k] on the CPU: key token ids
    near: Tensor  # float64 [q, k]: offsets 0..near_offsets
    dist: Tensor  # float64 [q, k]: q - k (0 above the diagonal)
    invlog: Tensor  # float64 [q]: 1 / log2(q + 1) (0 at q = 0)
    rel_flat: Tensor  # float [B, q * k, 2]: SAME_TOKEN and INDUCTION pairs
    eps: Tensor  # float [P, B]: the sign flips of each story


class MainPass:
    """A :class:`~tinyinterp.analysis.engine.PassConsumer` that accumulates :class:`MainStats`.

    ``stories`` is the corpus's packed store, indexed by the story indices of the batches.
    """

    def __init__(self, model, stories: StoryStore, profile: np.ndarray, n_perm: int, near_offsets: int, seed: int):
        L, H, V = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_vocab
        C = len(CATEGORIES)
        self.hook_names = [pattern_hook(layer) for layer in range(L)]
        self.stories, self.n_perm, self.near_offsets, self.seed = stories, n_perm, near_offsets, seed
        self.dev = model.cfg.device
        self.prof_t = torch.as_tensor(profile, dtype=torch.float32, device=self.dev)
        self.pred = PredictedPatterns(self.prof_t)
        self.tables = _category_tables(stories)
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        self.acc = {k: z(L, H) for k in ("bos", "prev", "near", "dist", "entropy", "entropy_norm", "sq", "cross", "pred_sq")}
        self.obs, self.exp, self.flips = z(L, H, C), z(L, H, C), z(n_perm, L, H, C)
        self.tok_obs, self.tok_exp, self.tok_count, self.cat_keys = z(L, H, V), z(L, H, V), z(V), z(C)
        self.n_rows = self.inv_rows = 0.0
        self.n_stories = 0

    def batch_hooks(self, batch) -> list:
        """One hook on every layer's pattern: the batch's per-token tensors are built once here
        (:meth:`_prepare`), each layer's pattern is reduced into the sums by :meth:`_reduce`."""
        b = self._prepare(batch)

        def hook(pattern: Tensor, hook) -> None:
            self._reduce(b, hook.layer(), pattern.float())

        return [(lambda name: name.endswith("attn.hook_pattern"), hook)]

    def _prepare(self, batch) -> "_BatchTensors":
        """Masks, distance tables, key categories and signs of one batch; adds its per-key counts."""
        dev = self.dev
        tokens, idx = batch.tokens, batch.stories
        n = tokens.shape[1]
        CK = len(KEY_CATEGORIES)
        rm = batch.mask.float()
        rm[:, 0] = 0.0  # [B, q]: real query rows other than BOS
        km = rm  # keys other than BOS and padding: the same mask, indexed by k
        self.n_stories += int((batch.lengths >= 2).sum())
        q = torch.arange(n, device=dev)
        off = q[:, None] - q[None, :]  # [q, k]
        keycats = torch.as_tensor(_key_categories(self.stories, idx, n, self.tables), device=dev)  # [B, k, C_key]
        real = rm > 0
        valid = (off > 0) & real[:, :, None] & real[:, None, :]  # [B, q, k]: k < q, both real, not BOS
        prev_tok = torch.cat([torch.full_like(tokens[:, :1], -1), tokens[:, :-1]], 1)  # token before each key
        prev_tok[:, 1] = -1  # the token before key 1 is BOS: not an earlier occurrence
        rel = torch.empty(len(tokens), n, n, 2, device=dev)  # [B, q, k, r]: SAME_TOKEN, INDUCTION
        rel[..., 0] = (tokens[:, :, None] == tokens[:, None, :]) & valid
        rel[..., 1] = (tokens[:, :, None] == prev_tok[:, None, :]) & valid
        rows_seeing = rm.flip(1).cumsum(1).flip(1)  # [B, k]: real query rows q >= k
        self.cat_keys[:CK] += einsum(rows_seeing * km, keycats, "b k, b k c -> c").double().cpu()
        self.cat_keys[CK:] += rel.sum((0, 1, 2)).double().cpu()
        flat_tok = rearrange(tokens, "b k -> (b k)").cpu()
        self.tok_count.index_add_(0, flat_tok, rearrange(km, "b k -> (b k)").double().cpu())
        rm64 = rm.double()
        self.n_rows += float(rm.sum())
        self.inv_rows += float((rm64 / (q + 1).double()).sum())
        return _BatchTensors(
            n=n, rm=rm, rm64=rm64, km=km, keycats=keycats, flat_tok=flat_tok,
            near=((off >= 0) & (off <= self.near_offsets)).double(), dist=off.clamp(min=0).double(),
            invlog=torch.where(q >= 1, 1.0 / torch.log2((q + 1).double()), torch.zeros((), device=dev, dtype=torch.float64)),
            rel_flat=rearrange(rel, "b q k r -> b (q k) r"),
            eps=torch.as_tensor(story_signs(idx, self.n_perm, self.seed), device=dev))  # [P, B]

    def _reduce(self, b: "_BatchTensors", layer: int, pat: Tensor) -> None:
        """Fold one layer's pattern ``[B, H, q, k]`` into the sums (per-row reductions in float32, everything
        summed over rows in float64: the R² cancels sums)."""
        rm, rm64, km = b.rm, b.rm64, b.km
        pred = self.pred(layer, b.n)  # [H, q, k]
        col_obs = _col_mass(pat, rm)  # [B, H, k] mass each key receives from the valid rows
        A = row_sum(pat, rm).double()  # [H, q, k] attention summed over the valid rows
        pred64 = pred.double()
        ent = row_entropy(pat).double() * rm64[:, None, :] / LN2  # [B, H, q] bits
        sums = {
            "bos": A[..., 0].sum(-1),
            "prev": A.diagonal(offset=-1, dim1=1, dim2=2).sum(-1),
            "near": einsum(A, b.near, "h q k, q k -> h"),
            "dist": einsum(A, b.dist, "h q k, q k -> h"),
            "entropy": ent.sum((0, 2)),
            "entropy_norm": einsum(ent, b.invlog, "b h q, q -> h"),
            "sq": einsum(torch.linalg.vector_norm(pat, dim=-1).double().square(), rm64, "b h q, b q -> h"),
            "cross": einsum(A, pred64, "h q k, h q k -> h"),
            "pred_sq": einsum(rm64, pred64.square().sum(-1), "b q, h q -> h"),
        }
        for k, v in sums.items():
            self.acc[k][layer] += v.cpu()
        col_obs = col_obs * km[:, None, :]
        col_exp = einsum(rm, pred, "b q, h q k -> b h k") * km[:, None, :]
        o = torch.cat([einsum(col_obs, b.keycats, "b h k, b k c -> b h c"),
                       torch.bmm(rearrange(pat, "b h q k -> b h (q k)"), b.rel_flat)], -1)  # [B, H, C]
        e = torch.cat([einsum(col_exp, b.keycats, "b h k, b k c -> b h c"),
                       einsum(rearrange(pred, "h q k -> h (q k)"), b.rel_flat, "h x, b x r -> b h r")], -1)
        self.obs[layer] += o.sum(0).double().cpu()
        self.exp[layer] += e.sum(0).double().cpu()
        self.flips[:, layer] += einsum(b.eps, o - e, "p b, b h c -> p h c").double().cpu()
        self.tok_obs[layer].index_add_(1, b.flat_tok, rearrange(col_obs, "b h k -> h (b k)").double().cpu())
        self.tok_exp[layer].index_add_(1, b.flat_tok, rearrange(col_exp, "b h k -> h (b k)").double().cpu())

    SUMS = ("obs", "exp", "flips", "tok_obs", "tok_exp", "tok_count", "cat_keys")  # besides ``acc`` and the counts
    COUNTS = ("n_rows", "inv_rows", "n_stories")

    def state_dict(self) -> dict[str, Tensor]:
        """Every accumulated sum (float64 tensors; the counts as one-element tensors)."""
        out = {f"acc.{k}": v for k, v in self.acc.items()}
        out.update({k: getattr(self, k) for k in self.SUMS})
        out.update({k: torch.tensor([float(getattr(self, k))], dtype=torch.float64) for k in self.COUNTS})
        return out

    def merge_state(self, state: dict[str, Tensor]) -> None:
        """Add the :meth:`state_dict` of the same pass (same calibration) over other stories."""
        for k in self.acc:
            self.acc[k] += state[f"acc.{k}"]
        for k in self.SUMS:
            getattr(self, k).add_(state[k])
        self.n_rows += float(state["n_rows"][0])
        self.inv_rows += float(state["inv_rows"][0])
        self.n_stories += int(state["n_stories"][0])

    def stats(self) -> "MainStats":
        np_acc = {k: v.numpy() for k, v in self.acc.items()}
        return MainStats(self.n_stories, self.n_rows, self.inv_rows, obs=self.obs.numpy(), exp=self.exp.numpy(),
                         flips=self.flips.numpy(), cat_keys=self.cat_keys.numpy(), tok_obs=self.tok_obs.numpy(),
                         tok_exp=self.tok_exp.numpy(), tok_count=self.tok_count.numpy(), **np_acc)
