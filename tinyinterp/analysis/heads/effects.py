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
from einops import einsum, rearrange

from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.heads.copying import ov_copying
from tinyinterp.analysis.heads.effects_pass import (CONTENT, FUNCTION, NEXT_GROUPS, EffectsPass, _G, _tables,  # noqa: F401
                                                    next_groups, unembed_directions)
from tinyinterp.analysis.heads.scores import KEY_CATEGORIES
from tinyinterp.analysis.stats import BootstrapResult, bootstrap_mean, story_weights

log = logging.getLogger(__name__)

__all__ = ["NEXT_GROUPS", "FUNCTION", "CONTENT", "EffectsPass", "HeadEffects", "collect_effects"]

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

    def lift(self, null: float = 1.0) -> BootstrapResult:
        """``[LH, C]`` observed ÷ profile-predicted attention mass per key category; Wald p against ``null``."""
        S = self.obs.shape[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = bootstrap_mean(rearrange(self.obs, "s x c -> s (x c)"), rearrange(self.exp, "s x c -> s (x c)"),
                               self.weights(S), null=null)
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


def collect_effects(fx: EffectsPass, model, corpus: TaggedCorpus, n_boot: int = 2000, seed: int = 0,
                    copying_min_count: int = 5) -> HeadEffects:
    """:class:`HeadEffects` from a finished (or merged) :class:`EffectsPass` over ``corpus``, plus the OV
    copying scores (weights only; token ids occurring at least ``copying_min_count`` times in the corpus)."""
    store = corpus.packed()
    toks = store.flat("tokens", np.arange(len(corpus)), model.cfg.n_ctx)
    ids, counts = np.unique(toks, return_counts=True)
    copying = ov_copying(model, ids[counts >= copying_min_count])
    used = np.nonzero(fx.n_next[:, _G["ALL"]] > 0)[0]
    meta = {"n_stories": int(len(used)), "copying_vocab": int((counts >= copying_min_count).sum()),
            "groups": list(NEXT_GROUPS), "attn_categories": list(KEY_CATEGORIES), "output_effects": fx.output_effects,
            "dla_centering": "W_U centred over the vocabulary (effect relative to the average token)"}
    pick = lambda a: a[used]  # noqa: E731
    return HeadEffects(model.cfg.n_layers, model.cfg.n_heads, pick(fx.dla), pick(fx.n_next), pick(fx.att_in),
                       pick(fx.att_out), pick(fx.rows_in), pick(fx.rows_out), pick(fx.obs), pick(fx.exp),
                       fx.position_r2(), fx.mean_z().numpy(), copying, {}, n_boot, seed, meta)
