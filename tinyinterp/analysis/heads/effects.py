"""What each attention head helps produce: output effects grouped by the *next* token's category.

>>> fx = head_effects(model, corpus)                       # doctest: +SKIP
>>> fx.table("dla").query("group in ['FUNCTION', 'CONTENT', 'NAME']")   # doctest: +SKIP

Every quantity is a per-story sum, so confidence intervals come from a bootstrap over stories
(:mod:`tinyinterp.analysis.stats`); tokens of one story are never treated as independent.

Groups (:data:`NEXT_GROUPS`) describe the token being predicted at position ``p`` (the token at
``p + 1``): each UPOS class, ``NAME`` (PROPN or a spaCy PERSON entity), ``FUNCTION``
(DET/ADP/AUX/PRON/CCONJ/SCONJ/PART), ``CONTENT`` (NOUN/PROPN/VERB/ADJ), and ``ALL`` (every
predicted token). Category groups count only **word-initial** next tokens (the second piece of
"Lu|cy" is predicted from the first, not from the head's notion of a name); ``ALL`` counts every
token.

* **Direct logit attribution** (``dla``, :class:`EffectsPass`): head output ``z @ W_O`` centred
  over ``d_model`` (what the final LayerNorm does to it), divided by the final LayerNorm's scale
  taken from the same forward (``ln_final.hook_scale``), times the LayerNorm weight, dotted with
  ``W_U[:, next] - mean_v W_U[:, v]``. Centring ``W_U`` over the vocabulary makes the number the
  head's push on the correct token *relative to the average token*, which is what changes the
  softmax (a push on every logit alike changes nothing); uncentred numbers are not reported.
  The LayerNorm bias and ``b_U`` do not depend on the head and drop out.
* **Attention conditioned on the next token** (``attn_next``): attention mass a head puts on keys
  of category ``c`` at query rows whose next token is in ``c`` minus the mass at rows whose next
  token is not (per head, per key category). E.g. does a name-attending head attend to earlier
  names more where a name comes next?
* **Category lift** (``lift``): attention mass on keys of each category ÷ the mass the head's own
  offset profile predicts for them (per story, so the lift gets a story-bootstrap CI and a Wald
  p-value, corrected with Benjamini–Hochberg across every head × category in
  :mod:`tinyinterp.analysis.heads.axes`).
* **Ablation** (:func:`~tinyinterp.analysis.heads.ablation.ablation_effects`, run by :func:`~tinyinterp.analysis.heads.claims.analyse_heads`; a separate and costlier step: two forwards per head):
  mean-ablate (``z`` := its corpus mean at that position's head) and resample-ablate (``z`` := the
  same head's ``z`` at the same position of another story of the batch) each head's ``hook_z``
  and record the change in next-token loss (nats) per group. This is the total effect: it
  includes what later layers do with the head's output.
* **OV copying** (:func:`~tinyinterp.analysis.heads.copying.ov_copying`): for ``M = W_E W_V W_O W_U`` restricted to the token ids
  seen in the corpus, the eigenvalue score ``Σ Re λ / Σ |λ|`` of Elhage et al. (2021) (1: the
  head copies what it attends to) and the diagonal rank: share of tokens whose own logit is
  among the top 5 of its row of ``M``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from einops import einsum, rearrange
from jaxtyping import Float
from torch import Tensor

from tinyinterp.analysis.corpus.store import StoryStore, TaggedCorpus
from tinyinterp.analysis.heads.scores import (KEY_CATEGORIES, UPOS_CATEGORIES, _category_tables, _key_categories,
                                              predicted_pattern)
from tinyinterp.analysis.stats import BootstrapResult, bootstrap_mean, story_weights
from tinyinterp.analysis.engine import PassBatch, eval_mode, run_pass
from tinyinterp.analysis.heads.copying import ov_copying

log = logging.getLogger(__name__)

__all__ = ["NEXT_GROUPS", "FUNCTION", "CONTENT", "EffectsPass", "HeadEffects", "head_effects", "EffectsConfig"]

FUNCTION = ("DET", "ADP", "AUX", "PRON", "CCONJ", "SCONJ", "PART")
CONTENT = ("NOUN", "PROPN", "VERB", "ADJ")
NEXT_GROUPS = (*UPOS_CATEGORIES, "NAME", "FUNCTION", "CONTENT", "ALL")
_G = {g: i for i, g in enumerate(NEXT_GROUPS)}


@dataclass
class EffectsConfig:
    """Settings of :func:`head_effects`."""

    n_boot: int = 2000  # story-bootstrap resamples for every CI (Wald p-values do not need 1/p resamples)
    copying_min_count: int = 5  # a token id enters the OV copying score when it occurs this often in the corpus
    batch_tokens: int = 4096
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        from tinyinterp.errors import ConfigError

        for name in ("n_boot", "batch_tokens", "copying_min_count"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"EffectsConfig.{name}={v!r}: must be an integer >= 1")


def _tables(store: StoryStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Code tables: UPOS code -> group index (-1 none), is-PROPN, is-PERSON (last entry: padding)."""
    upos, ent = store.vocab["upos"], store.vocab["ent"]
    grp = np.array([_G.get(u, -1) if u in UPOS_CATEGORIES else -1 for u in upos] + [-1], dtype=np.int64)
    propn = np.array([u == "PROPN" for u in upos] + [False])
    person = np.array([e == "PERSON" for e in ent] + [False])
    return grp, propn, person


def next_groups(store: StoryStore, idx: np.ndarray, n: int, lengths: np.ndarray, tables) -> np.ndarray:
    """float32 ``[B, n, G]``: multi-hot group of the token predicted at each position (the next token).

    Category groups count word-initial next tokens only; ``ALL`` every position with a next token.
    """
    grp_t, propn_t, person_t = tables
    upos = store.padded("upos", idx, n + 1)[:, 1:]  # code of the next token's word; -1 past the end
    ent = store.padded("ent", idx, n + 1)[:, 1:]
    cont = store.padded("cont", idx, n + 1, fill=1)[:, 1:].astype(bool)
    B = len(idx)
    out = np.zeros((B, n, len(NEXT_GROUPS)), dtype=np.float32)
    has_next = np.arange(n)[None, :] < (np.asarray(lengths)[:, None] - 1)
    g = grp_t[upos]
    start = has_next & ~cont
    b, p = np.nonzero(start & (g >= 0))
    out[b, p, g[b, p]] = 1.0
    out[..., _G["NAME"]] = start & (propn_t[upos] | person_t[ent])
    out[..., _G["FUNCTION"]] = out[..., [_G[u] for u in FUNCTION]].max(-1)
    out[..., _G["CONTENT"]] = out[..., [_G[u] for u in CONTENT]].max(-1)
    out[..., _G["ALL"]] = has_next
    return out


def unembed_directions(model) -> Float[Tensor, "d_model d_vocab"]:
    """``w_ln ⊙ W_U`` centred over the vocabulary and over ``d_model`` (see the module docstring)."""
    W_U = model.W_U.detach().float()
    ln = getattr(model, "ln_final", None)
    w = getattr(ln, "w", None)
    U = W_U * w.detach().float()[:, None] if w is not None else W_U
    U = U - U.mean(1, keepdim=True)  # relative to the average token
    if ln is not None and model.cfg.normalization_type in ("LN", "LNPre"):
        U = U - U.mean(0, keepdim=True)  # LayerNorm centres the residual: only the centred head output counts
    return U


class EffectsPass:
    """A :class:`~tinyinterp.analysis.engine.PassConsumer`: per-story sums of direct logit attribution
    by next-token group, attention conditioned on the next token, category lift against ``profile``
    (``[L, H, n_ctx]`` offset profile, or None to skip), and the mean ``z`` of every head."""

    def __init__(self, model, store: StoryStore, n_stories: int, profile: np.ndarray | None = None):
        cfg = model.cfg
        L, H, G, C = cfg.n_layers, cfg.n_heads, len(NEXT_GROUPS), len(KEY_CATEGORIES)
        self.model, self.store, self.L, self.H = model, store, L, H
        self.tables = _tables(store)
        self.key_tables = _category_tables(store)
        self.U = unembed_directions(model).to(cfg.device)
        self.W_O = model.W_O.detach().float()  # [L, H, d_head, d_model]
        self.has_scale = "ln_final.hook_scale" in model.hook_dict and cfg.normalization_type in ("LN", "LNPre")
        self.hook_names = [f"blocks.{l}.attn.hook_pattern" for l in range(L)] + [f"blocks.{l}.attn.hook_z" for l in range(L)]
        self.hook_names += ["ln_final.hook_scale"] if self.has_scale else []
        self.profile = None if profile is None else torch.as_tensor(profile, dtype=torch.float32, device=cfg.device)
        z = lambda *s: np.zeros(s)  # noqa: E731
        self.dla = z(n_stories, L * H, G)  # sum of direct logit attribution over tokens whose next is in group g
        self.n_next = z(n_stories, G)  # tokens per group
        self.att_in, self.att_out = z(n_stories, L * H, C), z(n_stories, L * H, C)  # mass on key cat c, rows next in/not in c
        self.rows_in, self.rows_out = z(n_stories, C), z(n_stories, C)
        self.obs, self.exp = z(n_stories, L * H, C), z(n_stories, L * H, C)  # lift: observed / profile-predicted mass
        self.z_sum = torch.zeros(L, H, cfg.d_head, dtype=torch.float64)
        self.z_n = 0.0
        N = cfg.n_ctx  # position-only surrogate: per-(q, k) sums of A and A^2 over stories, stories per row
        self.cell_s1 = torch.zeros(L, H, N, N, dtype=torch.float64)
        self.cell_s2 = torch.zeros(L, H, N, N, dtype=torch.float64)
        self.row_n = torch.zeros(N, dtype=torch.float64)

    def batch_hooks(self, batch: PassBatch) -> list:
        B, n = batch.tokens.shape
        dev = batch.tokens.device
        idx = batch.stories
        nxt = torch.as_tensor(next_groups(self.store, idx, n, batch.lengths, self.tables), device=dev)  # [B, n, G]
        keyc = torch.as_tensor(_key_categories(self.store, idx, n, self.key_tables), device=dev)  # [B, k, C]
        next_ids = torch.cat([batch.tokens[:, 1:], torch.zeros_like(batch.tokens[:, :1])], 1)  # [B, n]
        u = self.U[:, next_ids]  # [d_model, B, n]
        rm = batch.mask.float().clone()
        rm[:, 0] = 0.0  # query rows other than BOS
        valid = batch.mask.float()
        next_key = nxt[..., [_G[c] if c in _G else _G["NAME"] for c in KEY_CATEGORIES]] * rm[..., None]  # [B, q, C]
        self.n_next[idx] += nxt.sum(1).double().cpu().numpy()
        self.rows_in[idx] += next_key.sum(1).double().cpu().numpy()
        self.rows_out[idx] += (rm.sum(1)[:, None] - next_key.sum(1)).double().cpu().numpy()
        self.z_n += float(valid.sum())
        self.row_n[:n] += rm.sum(0).double().cpu()
        zs: dict[int, Tensor] = {}
        H = self.H

        def on_pattern(pattern: Tensor, hook) -> None:
            layer, pat = hook.layer(), pattern.float()
            mass = torch.matmul(pat, keyc[:, None])  # [B, H, q, C] mass each row puts on key category c
            tot = einsum(mass, rm, "b h q c, b q -> b h c")
            ins = einsum(mass, next_key, "b h q c, b q c -> b h c")
            sl = slice(layer * H, (layer + 1) * H)
            self.att_in[idx, sl] += ins.double().cpu().numpy()
            self.att_out[idx, sl] += (tot - ins).double().cpu().numpy()
            self.obs[idx, sl] += tot.double().cpu().numpy()
            # the pattern without the first key (a sink), renormalised; padding rows do not count
            rest = pat[..., 1:] / (1.0 - pat[..., :1]).clamp(min=1e-6) * rm[:, None, :, None]  # [B, H, q, k-1]
            self.cell_s1[layer, :, :n, : n - 1] += rest.sum(0).double().cpu()
            self.cell_s2[layer, :, :n, : n - 1] += rest.square().sum(0).double().cpu()
            if self.profile is not None:
                pred = predicted_pattern(self.profile[layer], n)  # [H, q, k]
                col = einsum(rm, pred, "b q, h q k -> b h k")
                self.exp[idx, sl] += einsum(col, keyc, "b h k, b k c -> b h c").double().cpu().numpy()

        def on_z(z: Tensor, hook) -> None:
            layer = hook.layer()
            zs[layer] = z.float()
            self.z_sum[layer] += einsum(z.float(), valid, "b p h e, b p -> h e").double().cpu()
            if not self.has_scale and layer == self.L - 1:
                self._dla(zs, torch.ones(B, n, 1, device=dev), u, nxt, idx)

        def on_scale(scale: Tensor, hook) -> None:
            self._dla(zs, scale.float(), u, nxt, idx)

        hooks = [(lambda name: name.endswith("attn.hook_pattern"), on_pattern),
                 (lambda name: name.endswith("attn.hook_z"), on_z)]
        return hooks + ([("ln_final.hook_scale", on_scale)] if self.has_scale else [])

    def _dla(self, zs: dict[int, Tensor], scale: Tensor, u: Tensor, nxt: Tensor, idx: np.ndarray) -> None:
        """Direct logit attribution of every head to the next token, summed per story and group."""
        for layer, z in zs.items():
            y = einsum(u, self.W_O[layer].to(z.device), "d b p, h e d -> b p h e")  # W_O[h] @ u per position
            dla = (y * z).sum(-1) / scale  # [B, n, H] (scale: [B, n, 1])
            g = einsum(dla, nxt, "b p h, b p g -> b h g")
            self.dla[idx, layer * self.H:(layer + 1) * self.H] += g.double().cpu().numpy()
        zs.clear()

    def position_r2(self) -> np.ndarray:
        """``[L, H]`` held-out R² of the position-only surrogate (NaN where rows are uniform).

        The surrogate predicts ``A[q, k]`` of a story by the head's mean pattern at ``(q, k)`` over
        the *other* stories (leave one out), so a head whose pattern depends on positions only
        scores 1 whatever its shape, and a head driven by content scores about 0. It is computed on
        the attention *not* spent on the first token (each row renormalised over keys ``1..q``):
        a sink is measured by ``bos_mass``, and the axis says how the head spends the rest.
        Baseline: the uniform row ``1 / q``; rows seen in fewer than 2 stories are skipped.
        """
        n = self.row_n  # [N] stories with query row q
        ok = (n >= 2).double()
        s1, s2 = self.cell_s1, self.cell_s2
        within = (s2 - s1.square() / n.clamp(min=1)[:, None]).sum(-1)  # [L, H, q]: sum over stories of (A - mean)^2
        loo = within * (n / (n - 1).clamp(min=1)).square()  # leave-one-out residuals of a mean
        q = torch.arange(len(n), dtype=torch.float64)
        tot = s2.sum(-1) - n / q.clamp(min=1)  # sum (A - 1/q)^2 over the row's keys 1..q (rows sum to 1)
        res, den = (loo * ok).sum(-1), (tot * ok).sum(-1)
        r2 = torch.where(den > 1e-6 * (s2.sum((-1, -2)) + 1e-30), 1.0 - res / den.clamp(min=1e-30),
                         torch.full_like(den, float("nan")))
        return r2.numpy()

    def mean_z(self) -> Tensor:
        """``[L, H, d_head]`` mean of each head's ``z`` over the tokens seen (for mean-ablation)."""
        return (self.z_sum / max(self.z_n, 1.0)).float()


@dataclass
class HeadEffects:
    """Per-story sums behind every output-effect number, and their story-bootstrap summaries.

    Arrays are indexed ``[story, layer * n_heads + head, group]`` over the stories in ``stories``
    (``ablation`` over ``ablation_stories``); groups are :data:`NEXT_GROUPS`, attention categories
    :data:`~tinyinterp.analysis.heads.scores.KEY_CATEGORIES`.
    """

    n_layers: int
    n_heads: int
    dla: np.ndarray  # [S, LH, G]
    n_next: np.ndarray  # [S, G]
    att_in: np.ndarray  # [S, LH, C]
    att_out: np.ndarray
    rows_in: np.ndarray  # [S, C]
    rows_out: np.ndarray
    obs: np.ndarray  # [S, LH, C]
    exp: np.ndarray
    position_r2: np.ndarray | None = None  # [L, H] held-out R² of the position-only surrogate (EffectsPass.position_r2)
    mean_z: np.ndarray | None = None  # [L, H, d_head] mean of each head's z over the stories (mean-ablation value)
    copying: dict[str, np.ndarray] = field(default_factory=dict)  # [L, H] each
    ablation: dict[str, np.ndarray] = field(default_factory=dict)  # "mean"/"resample": [S', LH, G]; "n": [S', G]
    n_boot: int = 2000
    seed: int = 0
    meta: dict = field(default_factory=dict)

    def weights(self, n_stories: int) -> np.ndarray:
        return story_weights(n_stories, self.n_boot, self.seed)

    def per_token(self, kind: str) -> BootstrapResult:
        """Mean effect per predicted token of each group, ``[LH, G]``: ``kind`` = ``dla``,
        ``mean`` or ``resample`` (ablation: loss change in nats; positive = the head helped)."""
        if kind == "dla":
            sums, n = self.dla, self.n_next
        else:
            sums, n = self.ablation[kind], self.ablation["n"]
        S = sums.shape[0]
        flat = rearrange(sums, "s x g -> s (x g)")
        cnt = np.repeat(n[:, None, :], sums.shape[1], 1).reshape(S, -1)
        with warnings.catch_warnings():  # groups absent from the corpus (e.g. SYM) are NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            r = bootstrap_mean(flat, cnt, self.weights(S))
        shape = sums.shape[1:]
        return BootstrapResult(r.estimate.reshape(shape), r.ci_low.reshape(shape), r.ci_high.reshape(shape),
                               r.p_value.reshape(shape), r.n_boot, r.null)

    def attn_next(self) -> BootstrapResult:
        """``[LH, C]``: mass on key category c at rows whose next token is in c minus rows where it is not."""
        S = self.att_in.shape[0]
        w = self.weights(S).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            est = self.att_in.sum(0) / self.rows_in.sum(0) - self.att_out.sum(0) / self.rows_out.sum(0)
            reps = (einsum(w, self.att_in, "r s, s x c -> r x c") / (w @ self.rows_in)[:, None]
                    - einsum(w, self.att_out, "r s, s x c -> r x c") / (w @ self.rows_out)[:, None])
        from tinyinterp.analysis.stats import percentile_ci, wald_pvalue

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = percentile_ci(reps)
            return BootstrapResult(est, lo, hi, wald_pvalue(est, reps, 0.0), self.n_boot, 0.0)

    def lift(self) -> BootstrapResult:
        """``[LH, C]`` observed ÷ profile-predicted attention mass per key category; p against 1."""
        S = self.obs.shape[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = bootstrap_mean(rearrange(self.obs, "s x c -> s (x c)"), rearrange(self.exp, "s x c -> s (x c)"),
                               self.weights(S), null=1.0)
        shape = self.obs.shape[1:]
        return BootstrapResult(r.estimate.reshape(shape), r.ci_low.reshape(shape), r.ci_high.reshape(shape),
                               r.p_value.reshape(shape), r.n_boot, r.null)

    def table(self, kind: str = "dla") -> pd.DataFrame:
        """Long table ``layer, head, group, estimate, ci_low, ci_high, p_value`` for ``dla``/``mean``/``resample``."""
        r = self.per_token(kind)
        rows = []
        for x in range(r.estimate.shape[0]):
            for g, name in enumerate(NEXT_GROUPS):
                rows.append({"layer": x // self.n_heads, "head": x % self.n_heads, "group": name, **r.row((x, g))})
        return pd.DataFrame(rows)


def head_effects(model, corpus: TaggedCorpus, config: EffectsConfig | None = None, profile: np.ndarray | None = None,
                 extra_consumers: list | None = None, groups: list[np.ndarray] | None = None) -> HeadEffects:
    """Output effects of every head of ``model`` on ``corpus`` (see the module docstring).

    ``profile``: ``[L, H, n_ctx]`` offset profiles for the lift (e.g. from
    :func:`~tinyinterp.analysis.heads.scores.calibrate`); None skips the lift. ``extra_consumers``
    share the streaming pass (e.g. the head classifier's ``MainPass``), over ``groups`` of stories.
    """
    import time

    cfg = config if config is not None else EffectsConfig()
    store = corpus.packed()
    with eval_mode(model):
        fx = EffectsPass(model, store, len(corpus), profile)
        t0 = time.perf_counter()
        run_pass(model, corpus, [*(extra_consumers or []), fx], groups, cfg.batch_tokens, cfg.progress, "heads: effects")
        t_pass = time.perf_counter() - t0
        toks = store.flat("tokens", np.arange(len(corpus)), model.cfg.n_ctx)
        ids, counts = np.unique(toks, return_counts=True)
        copying = ov_copying(model, ids[counts >= cfg.copying_min_count])
    used = np.nonzero(fx.n_next[:, _G["ALL"]] > 0)[0]
    meta = {"pass_s": t_pass, "n_stories": int(len(used)), "copying_vocab": int((counts >= cfg.copying_min_count).sum()),
            "groups": list(NEXT_GROUPS), "attn_categories": list(KEY_CATEGORIES),
            "dla_centering": "W_U centred over the vocabulary (effect relative to the average token)"}
    pick = lambda a: a[used]  # noqa: E731
    return HeadEffects(model.cfg.n_layers, model.cfg.n_heads, pick(fx.dla), pick(fx.n_next), pick(fx.att_in),
                       pick(fx.att_out), pick(fx.rows_in), pick(fx.rows_out), pick(fx.obs), pick(fx.exp), fx.position_r2(), fx.mean_z().numpy(),
                       copying, {},
                       cfg.n_boot, cfg.seed, meta)
