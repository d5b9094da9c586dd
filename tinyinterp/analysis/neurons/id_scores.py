"""Scores of a lexical scorer on test tokens, with their metrics computed per token id when they can be.

A scorer that is a function of the token id alone (the lookup, the embedding probe) declares it by
carrying ``score_ids(ua, train_rows, ids) -> [len(ids), tag]`` (see :func:`id_scorer`). It is then
fit once and predicted once per *distinct* test id instead of once per test token, and its held-out
metrics come from per-id counts (positives and negatives of each id): the AUROC is the Mann–Whitney
statistic over the distinct score values (ties, which may span several ids, count half) and the AP
is scikit-learn's step-wise AP with thresholds at the distinct score values. Both are exact: every
count is an integer held exactly in float64, and the AP is summed over the same arrays in the same
order as ``sklearn.metrics.average_precision_score``, so the results equal the per-token path's
(:class:`TokenScores`) to the last bit.

Within a (token id, word type) stratum such a scorer gives every token the same score, so its
within-identity AUROC on ambiguous words is exactly 0.5 in every story resample that holds a
comparable pair; :meth:`IdScores.ambiguous_bootstrap` counts those resamples instead of ranking each.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from jaxtyping import Float, Int

from tinyinterp.analysis.stats import BootstrapResult, bootstrap_auroc, percentile_ci, wald_pvalue, weighted_auroc
from tinyinterp.analysis.neurons.units import UnitActivations

__all__ = ["IdScores", "TokenScores", "id_scorer", "level_ap", "level_auroc", "scores_on"]

IdScore = Callable[[UnitActivations, np.ndarray, np.ndarray], np.ndarray]
"""``score_ids(ua, train_rows, ids) -> [len(ids), tag]``: fit on ``train_rows``, score each id in ``ids``."""


def id_scorer(score_ids: IdScore) -> Callable[[UnitActivations, np.ndarray, np.ndarray], np.ndarray]:
    """A per-token scorer ``(ua, train_rows, test_rows) -> [n_test, tag]`` that scores each distinct test id once
    and carries ``score_ids`` so that :func:`scores_on` (and ``evaluate_scorer``) can stay at the id level."""
    def score(ua: UnitActivations, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        ids, inv = np.unique(ua.token_ids[test], return_inverse=True)
        return score_ids(ua, train, ids)[inv]
    score.score_ids = score_ids  # type: ignore[attr-defined]
    return score


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s)) if y.any() and not y.all() else math.nan


def level_auroc(scores: Float[np.ndarray, " level"], pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC (ties count half) of tokens grouped into score levels: ``pos``/``neg`` tokens score ``scores[i]``.

    Equals ``weighted_auroc`` on the tokens themselves (integer counts: exact). NaN without a pair."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # runs of equal scores (may span several ids)
    gp = np.add.reduceat(pos[order].astype(np.float64), starts)
    gn = np.add.reduceat(neg[order].astype(np.float64), starts)
    below = np.cumsum(gn) - gn  # negatives strictly below each run
    den = gp.sum() * gn.sum()
    return float((gp * (below + 0.5 * gn)).sum() / den) if den > 0 else math.nan


def level_ap(scores: Float[np.ndarray, " level"], pos: np.ndarray, neg: np.ndarray) -> float:
    """``sklearn.metrics.average_precision_score`` of tokens grouped into score levels (as :func:`level_auroc`).

    Thresholds at the distinct scores, descending; the same precision and recall arrays summed in the
    same order as scikit-learn, so the value is identical. NaN when all tokens or none are positive."""
    if not pos.any() or not neg.any():
        return math.nan
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # end of each run of equal scores
    tps = np.cumsum(pos[order].astype(np.float64))[last]
    fps = np.cumsum(neg[order].astype(np.float64))[last]
    precision = np.r_[(tps / (tps + fps))[::-1], 1.0]
    recall = np.r_[(tps / tps[-1])[::-1], 0.0]
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


class TokenScores:
    """Per-token scores ``[token, tag]`` of a scorer on test tokens, with their metrics (the generic path)."""

    def __init__(self, scores: Float[np.ndarray, "token tag"], tags: Int[np.ndarray, " token"]):
        self.scores, self.tags = scores, tags

    def column(self, t: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Tag ``t``'s score of each test token (``rows``: only these, as indices into the test tokens)."""
        return self.scores[:, t] if rows is None else self.scores[rows, t]

    def auroc(self, t: int) -> float:
        return float(weighted_auroc(self.scores[:, t], self.tags == t))

    def ap(self, t: int) -> float:
        return _ap(self.tags == t, self.scores[:, t])

    def ambiguous_bootstrap(self, t: int, rows: np.ndarray, y: np.ndarray, story: np.ndarray, weights: np.ndarray,
                            strata: np.ndarray) -> BootstrapResult:
        """Within-stratum AUROC of tag ``t`` on test tokens ``rows`` (labels ``y``) with a story bootstrap."""
        return bootstrap_auroc(self.column(t, rows), y, story, weights, strata=strata)


class IdScores(TokenScores):
    """Scores of a function of the token id: ``[distinct test id, tag]`` plus each test token's id index."""

    def __init__(self, id_scores: Float[np.ndarray, "id tag"], inv: Int[np.ndarray, " token"],
                 tags: Int[np.ndarray, " token"], n_tags: int):
        self.id_scores, self.inv, self.tags = id_scores, inv, tags
        n_ids = id_scores.shape[0]
        self.pos = np.bincount(inv * n_tags + tags, minlength=n_ids * n_tags).reshape(n_ids, n_tags)  # [id, tag]
        self.n = np.bincount(inv, minlength=n_ids)  # test tokens per id

    @property
    def scores(self) -> np.ndarray:  # type: ignore[override]
        return self.id_scores[self.inv]

    def column(self, t: int, rows: np.ndarray | None = None) -> np.ndarray:
        return self.id_scores[self.inv if rows is None else self.inv[rows], t]

    def auroc(self, t: int) -> float:
        return level_auroc(self.id_scores[:, t], self.pos[:, t], self.n - self.pos[:, t])

    def ap(self, t: int) -> float:
        return level_ap(self.id_scores[:, t], self.pos[:, t], self.n - self.pos[:, t])

    def ambiguous_bootstrap(self, t: int, rows: np.ndarray, y: np.ndarray, story: np.ndarray, weights: np.ndarray,
                            strata: np.ndarray) -> BootstrapResult:
        """As :meth:`TokenScores.ambiguous_bootstrap`, without ranking: ``strata`` refine token ids, so every pair
        inside a stratum ties and a resample's AUROC is 0.5 when it holds a pair (a stratum with a drawn
        positive story and a drawn negative story), else NaN — exactly what ranking gives. Strata that do not
        refine token ids: the ranked bootstrap."""
        n_st = weights.shape[1]
        strata_ids, rank = np.unique(strata, return_inverse=True)
        if np.unique(rank.astype(np.int64) * len(self.id_scores) + self.inv[rows]).size != strata_ids.size:
            return super().ambiguous_bootstrap(t, rows, y, story, weights, strata)
        est = weighted_auroc(self.column(t, rows), y, strata=strata)
        cells = np.unique((rank.astype(np.int64) * n_st + story) * 2 + y)  # distinct (stratum, story, class), by stratum
        c_stratum, c_story, c_pos = cells // (2 * n_st), (cells // 2) % n_st, cells % 2 == 1
        bounds = np.flatnonzero(np.r_[True, c_stratum[1:] != c_stratum[:-1], True])
        has_pair = np.zeros(weights.shape[0], dtype=bool)
        for a, b in zip(bounds[:-1], bounds[1:]):
            if has_pair.all():
                break
            st, p = c_story[a:b], c_pos[a:b]
            has_pair |= (weights[:, st[p]] > 0).any(1) & (weights[:, st[~p]] > 0).any(1)
        reps = np.where(has_pair, 0.5, np.nan)
        lo, hi = percentile_ci(reps)
        return BootstrapResult(np.asarray(est, dtype=np.float64), lo, hi, wald_pvalue(est, reps, 0.5), len(reps), 0.5)


def scores_on(ua: UnitActivations, scorer: Callable, train: np.ndarray, test: np.ndarray) -> TokenScores:
    """The scorer fit on ``train`` and applied to ``test``: at the id level when it carries ``score_ids``."""
    score_ids = getattr(scorer, "score_ids", None)
    if score_ids is None:
        return TokenScores(scorer(ua, train, test), ua.tags[test])
    ids, inv = np.unique(ua.token_ids[test], return_inverse=True)
    return IdScores(score_ids(ua, train, ids), inv, ua.tags[test], ua.n_tags)
