"""Story-level statistics shared by every analysis: cluster bootstrap, weighted AUROC, FDR.

Tokens of one story are not independent, so every confidence interval and p-value in tinyinterp
resamples **stories** (a cluster bootstrap). One resample is a vector of story multiplicities
``w[story]`` drawn from a multinomial (the classic "resample n stories with replacement"); a
statistic is recomputed with each token weighted by its story's multiplicity. All helpers here are
vectorised over resamples where the statistic allows it.

Conventions:

- ``weights``: ``[n_boot, n_stories]`` integer multiplicities from :func:`story_weights`
  (deterministic for a seed).
- ``story`` arrays: per-token story index in ``0..n_stories-1``.
- CIs are percentile intervals; p-values against a null value use the bootstrap standard error
  (a Wald test, two-sided), so a small p does not need ``n_boot`` of order ``1/p``. The raw
  percentile p (``(count + 1) / (n_boot + 1)``) is also available for callers that prefer it;
  :func:`min_resamples` says how many resamples such a test needs to pass a Benjamini–Hochberg
  threshold at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "BootstrapResult",
    "bh_qvalues",
    "bootstrap_mean",
    "bootstrap_ratio",
    "min_resamples",
    "percentile_ci",
    "story_sums",
    "story_weights",
    "wald_pvalue",
    "weighted_auroc",
    "bootstrap_auroc",
    "bootstrap_contrast",
    "cluster_bootstrap_auroc",
    "story_pair_bootstrap_auroc",
]


def story_weights(n_stories: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``[n_boot, n_stories]`` int32 multiplicities: each row resamples ``n_stories`` stories with replacement."""
    if n_stories < 1 or n_boot < 1:
        raise ValueError(f"story_weights needs n_stories >= 1 and n_boot >= 1 (got {n_stories}, {n_boot})")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_stories, np.full(n_stories, 1.0 / n_stories), size=n_boot).astype(np.int32)


def story_sums(values: np.ndarray, story: np.ndarray, n_stories: int) -> np.ndarray:
    """Per-story sums of ``values`` (``[token]`` or ``[token, k]``) -> ``[n_stories]`` or ``[n_stories, k]``."""
    values = np.asarray(values, dtype=np.float64)
    story = np.asarray(story, dtype=np.int64)
    if values.ndim == 1:
        return np.bincount(story, weights=values, minlength=n_stories)
    out = np.zeros((n_stories, values.shape[1]))
    np.add.at(out, story, values)
    return out


def percentile_ci(reps: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates along ``axis`` (NaN replicates ignored)."""
    a = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(reps, [a, 1.0 - a], axis=axis)
    return lo, hi


def wald_pvalue(estimate: np.ndarray, reps: np.ndarray, null: float, axis: int = 0) -> np.ndarray:
    """Two-sided p-value of ``estimate == null`` using the bootstrap standard error of ``reps``."""
    se = np.nanstd(reps, axis=axis, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (np.asarray(estimate, dtype=np.float64) - null) / se
    p = 2.0 * sps.norm.sf(np.abs(z))
    return np.where(np.isfinite(p), p, 1.0)


def min_resamples(n_tests: int, fdr: float = 0.05) -> int:
    """Resamples a percentile p-value ``(count+1)/(n_boot+1)`` needs so that one test can pass BH at all.

    The smallest BH threshold is ``fdr / n_tests``; a percentile p cannot go below ``1/(n_boot+1)``.
    """
    return int(np.ceil(n_tests / fdr))


@dataclass
class BootstrapResult:
    """A statistic with its story-bootstrap interval and a Wald p-value against ``null``."""

    estimate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray
    n_boot: int
    null: float

    def row(self, i=()) -> dict[str, float]:
        """One entry as plain floats (``i`` indexes the statistic's own shape)."""
        return {"estimate": float(self.estimate[i]), "ci_low": float(self.ci_low[i]),
                "ci_high": float(self.ci_high[i]), "p_value": float(self.p_value[i])}


def _result(est: np.ndarray, reps: np.ndarray, null: float, level: float) -> BootstrapResult:
    lo, hi = percentile_ci(reps, level)
    return BootstrapResult(np.asarray(est, dtype=np.float64), lo, hi, wald_pvalue(est, reps, null), reps.shape[0], null)


def bootstrap_mean(sums: np.ndarray, counts: np.ndarray, weights: np.ndarray, null: float = 0.0,
                   level: float = 0.95) -> BootstrapResult:
    """Token-weighted mean ``Σ sums / Σ counts`` with a story bootstrap.

    ``sums``: ``[n_stories]`` or ``[n_stories, k]`` per-story sums of a per-token value;
    ``counts``: matching per-story token counts (same shape, or ``[n_stories]`` shared by every column).
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim < sums.ndim:
        counts = np.broadcast_to(counts[:, None], sums.shape)
    w = weights.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = sums.sum(0) / counts.sum(0)
        reps = (w @ sums) / (w @ counts)  # [n_boot] or [n_boot, k]
    return _result(est, reps, null, level)


def bootstrap_ratio(num: np.ndarray, den: np.ndarray, weights: np.ndarray, null: float = 0.0,
                    level: float = 0.95) -> BootstrapResult:
    """Ratio of two per-story sums ``Σ num / Σ den`` (e.g. a share of an effect), story bootstrap."""
    return bootstrap_mean(num, den, weights, null=null, level=level)


def bootstrap_contrast(sums_a: np.ndarray, counts_a: np.ndarray, sums_b: np.ndarray, counts_b: np.ndarray,
                       weights: np.ndarray, null: float = 0.0, level: float = 0.95) -> BootstrapResult:
    """Difference of two token-weighted means ``Σ sums_a / Σ counts_a - Σ sums_b / Σ counts_b``.

    Both means are recomputed on the same resampled stories (the two groups share stories, so
    their errors are correlated and a difference of two separate intervals would be wrong).
    Shapes as in :func:`bootstrap_mean`.
    """
    a = bootstrap_mean(sums_a, counts_a, weights, level=level)
    b = bootstrap_mean(sums_b, counts_b, weights, level=level)
    w = weights.astype(np.float64)

    def reps(s: np.ndarray, c: np.ndarray) -> np.ndarray:
        s, c = np.asarray(s, dtype=np.float64), np.asarray(c, dtype=np.float64)
        if c.ndim < s.ndim:
            c = np.broadcast_to(c[:, None], s.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ s) / (w @ c)

    return _result(a.estimate - b.estimate, reps(sums_a, counts_a) - reps(sums_b, counts_b), null, level)


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None,
                   strata: np.ndarray | None = None) -> np.ndarray:
    """AUROC of ``scores`` for boolean ``labels`` (ties count one half), one value per weight row.

    ``weights``: ``None`` (plain AUROC, returns a 0-d array) or ``[n_rep, n_token]`` token weights
    (story multiplicities mapped to tokens): returns ``[n_rep]``. Sorts once; O(n_token) per row.
    ``strata`` (``[n_token]`` ints, e.g. word types): compare only positive/negative pairs of the
    same stratum (the stratified, or "within-type", AUROC: ``Σ_s pairs won in s / Σ_s n_pos_s n_neg_s``).
    A score that depends on the stratum alone (a token-identity lookup) then gets exactly 0.5.
    NaN where a row has no comparable pair.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    single = weights is None
    w = np.ones((1, scores.size)) if single else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    strata = np.zeros(scores.size, dtype=np.int64) if strata is None else np.asarray(strata, dtype=np.int64)
    if scores.size == 0:
        return np.array(np.nan) if single else np.full(w.shape[0], np.nan)
    order = np.lexsort((scores, strata))  # by stratum, then score
    s, g, y, w = scores[order], strata[order], labels[order], w[:, order]
    new_stratum = np.r_[True, g[1:] != g[:-1]]
    starts = np.flatnonzero(new_stratum | np.r_[True, s[1:] != s[:-1]])  # tie groups inside strata
    wp, wn = w * y, w * ~y  # [rep, tok]
    gp = np.add.reduceat(wp, starts, axis=1)  # positive weight per tie group
    gn = np.add.reduceat(wn, starts, axis=1)
    cum = np.cumsum(gn, axis=1)
    first = np.maximum.accumulate(np.where(new_stratum[starts], np.arange(len(starts)), 0))  # group opening each stratum
    below_n = cum - gn - (cum - gn)[:, first]  # negative weight strictly below each group, same stratum
    num = (gp * (below_n + 0.5 * gn)).sum(1)
    sstarts = np.flatnonzero(new_stratum[starts])
    den = (np.add.reduceat(gp, sstarts, axis=1) * np.add.reduceat(gn, sstarts, axis=1)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(den > 0, num / den, np.nan)
    return auc[0] if single else auc


def bootstrap_auroc(scores: np.ndarray, labels: np.ndarray, story: np.ndarray, weights: np.ndarray,
                    level: float = 0.95, strata: np.ndarray | None = None, chunk: int = 100) -> BootstrapResult:
    """AUROC with a story-bootstrap percentile CI and a Wald p-value against 0.5.

    ``story``: per-token story index into the columns of ``weights`` ``[n_boot, n_stories]``;
    ``strata``: see :func:`weighted_auroc` (within-stratum AUROC). Resamples are processed
    ``chunk`` at a time, so memory stays ``O(chunk * n_token)``.
    """
    est = weighted_auroc(scores, labels, strata=strata)
    story = np.asarray(story, dtype=np.int64)
    reps = np.concatenate([weighted_auroc(scores, labels, weights[i:i + chunk][:, story], strata)
                           for i in range(0, weights.shape[0], chunk)])
    return _result(est, reps, 0.5, level)


def story_pair_bootstrap_auroc(scores: np.ndarray, labels: np.ndarray, story: np.ndarray, weights: np.ndarray,
                               level: float = 0.95) -> BootstrapResult:
    """:func:`bootstrap_auroc` without strata, in ``O(n_stories^2)`` per resample instead of ``O(n_token)``.

    The pairs a positive wins against a negative are summed once per (positive's story, negative's
    story) into ``M [story, story]`` (ties count half); a resample with story multiplicities ``w`` then
    has AUROC ``w M w / ((w P) (w N))`` (``P``, ``N``: positives and negatives per story), exactly what
    :func:`bootstrap_auroc` computes token by token. Use it when many AUROCs over the same held-out
    tokens need a story bootstrap (one per neuron x tag row).
    """
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    story = np.asarray(story, dtype=np.int64)
    n_st = weights.shape[1]
    M = _story_pair_wins(scores[y], story[y], scores[~y], story[~y], n_st)
    P, N = np.bincount(story[y], minlength=n_st).astype(float), np.bincount(story[~y], minlength=n_st).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.asarray(M.sum() / (P.sum() * N.sum()))
        w = weights.astype(np.float64)
        reps = np.einsum("rs,rs->r", w @ M, w) / ((w @ P) * (w @ N))
    return _result(est, reps, 0.5, level)


def _story_pair_wins(sp: np.ndarray, st_p: np.ndarray, sn: np.ndarray, st_n: np.ndarray, n_st: int) -> np.ndarray:
    """``M [story, story]``: pairs each positive (row: its story) wins against each negative (column), ties half.

    Positives are sorted once; each negative story's few negatives are located among them
    (``searchsorted`` of the negatives, not of every positive), and a positive's wins against that
    story are a cumulative count over those insertion points: O(positives) per story, in integer
    counts (exact)."""
    order = np.argsort(sp, kind="stable")
    sp, st_p = sp[order], st_p[order]
    n_pos = len(sp)
    neg = np.lexsort((sn, st_n))
    sn, st_n = sn[neg], st_n[neg]
    bounds = np.searchsorted(st_n, np.arange(n_st + 1))
    M = np.zeros((n_st, n_st))
    for b in np.flatnonzero(np.diff(bounds)):
        v = sn[bounds[b]:bounds[b + 1]]  # this story's negatives
        # positive i beats negative v when i >= first positive > v; ties (first >= v <= i < first > v) count half
        steps = np.bincount(np.searchsorted(sp, v, "right"), minlength=n_pos + 1)
        steps += np.bincount(np.searchsorted(sp, v, "left"), minlength=n_pos + 1)
        won = np.cumsum(steps[:n_pos])  # 2 x (negatives below + half the ties), per sorted positive
        M[:, b] = np.bincount(st_p, weights=won, minlength=n_st) / 2.0
    return M


def cluster_bootstrap_auroc(scores: np.ndarray, labels: np.ndarray, cluster: np.ndarray, n_boot: int, seed: int = 0,
                            level: float = 0.95) -> BootstrapResult:
    """:func:`bootstrap_auroc` resampling any cluster ids (stories; or word types, when the claim is
    that an effect generalises to new word types)."""
    _, idx = np.unique(np.asarray(cluster), return_inverse=True)
    return bootstrap_auroc(scores, labels, idx, story_weights(int(idx.max()) + 1, n_boot, seed), level)


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values over the finite entries of ``p`` (NaN elsewhere)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = sps.false_discovery_control(np.clip(p[ok], 0.0, 1.0), method="bh")
    return q
