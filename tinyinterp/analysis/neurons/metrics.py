"""Exact per-unit metrics on in-memory activations: AUROC for every unit x tag, top activations, AP.

* :func:`auroc_matrix` — Mann–Whitney AUROC (ties count half) of every unit for every tag
  against all other tags, from one average-rank pass per unit; identical to
  ``sklearn.metrics.roc_auc_score``.
* :func:`top_tokens` — each unit's ``k`` largest activations (row indices), ties broken by row.
* :func:`specificity` — precision of each tag among the top activations, the number of distinct
  word types carrying it there, and each unit's dominant tag.
* :func:`average_precision` — exact AP (``sklearn.metrics.average_precision_score``) for chosen
  unit x tag rows, with the base rate so callers can report AP lift.

Binned (streaming) estimates live in :mod:`~tinyinterp.analysis.neurons.tail_ap`.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float, Int
from scipy.stats import rankdata

__all__ = ["auroc_matrix", "average_precision", "specificity", "top_tokens"]


def auroc_matrix(acts: Float[np.ndarray, "token unit"], tags: Int[np.ndarray, " token"], n_tags: int,
                 min_support: int = 1, chunk: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(auroc [unit, tag], n_pos [tag], n_neg [tag])``; NaN where a tag has < ``min_support`` positives or negatives."""
    n, n_units = acts.shape
    onehot = np.zeros((n, n_tags), dtype=np.float64)
    onehot[np.arange(n), tags] = 1.0
    n_pos = onehot.sum(0)
    n_neg = n - n_pos
    out = np.full((n_units, n_tags), np.nan)
    if n == 0:
        return out, n_pos.astype(int), n_neg.astype(int)
    for u0 in range(0, n_units, chunk):
        ranks = rankdata(acts[:, u0:u0 + chunk], axis=0)  # [token, chunk] average ranks
        rank_sum = ranks.T @ onehot  # [chunk, tag]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[u0:u0 + chunk] = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    ok = (n_pos >= min_support) & (n_neg >= min_support)
    out[:, ~ok] = np.nan
    return out, n_pos.astype(int), n_neg.astype(int)


def top_tokens(acts: Float[np.ndarray, "token unit"], k: int, chunk: int = 256) -> Int[np.ndarray, "unit k"]:
    """Row indices of each unit's ``k`` largest activations, largest first (ties: lower row first)."""
    n, n_units = acts.shape
    k = min(k, n)
    out = np.empty((n_units, k), dtype=np.int64)
    for u0 in range(0, n_units, chunk):
        a = acts[:, u0:u0 + chunk].T  # [chunk, token]
        part = np.argpartition(-a, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (a.shape[0], 1))
        # order the candidates by (value desc, row asc); boundary ties resolved by the partition
        vals = np.take_along_axis(a, part, 1)
        order = np.lexsort((part, -vals), axis=1)
        out[u0:u0 + chunk] = np.take_along_axis(part, order, 1)
    return out


def specificity(top: Int[np.ndarray, "unit k"], tags: Int[np.ndarray, " token"], words: Int[np.ndarray, " token"],
                n_tags: int) -> dict[str, np.ndarray]:
    """Tag make-up of each unit's top activations.

    Returns ``precision`` ``[unit, tag]`` (share of the top tokens with the tag), ``n_types``
    ``[unit, tag]`` (distinct word types with the tag among them), ``n_types_all`` ``[unit]``,
    ``dominant`` ``[unit]`` (most frequent tag) and ``dominant_share`` ``[unit]``.
    """
    t, w = tags[top], words[top]  # [unit, k]
    n_units, k = top.shape
    precision = np.stack([(t == j).mean(1) for j in range(n_tags)], 1) if k else np.zeros((n_units, n_tags))
    base = int(words.max()) + 1 if words.size else 1
    code = t.astype(np.int64) * base + w  # (tag, word) pair per top token
    n_types = np.zeros((n_units, n_tags), dtype=np.int64)
    n_types_all = np.zeros(n_units, dtype=np.int64)
    for u in range(n_units):
        n_types[u] = np.bincount(np.unique(code[u]) // base, minlength=n_tags)
        n_types_all[u] = np.unique(w[u]).size
    dominant = precision.argmax(1)
    return {"precision": precision, "n_types": n_types, "n_types_all": n_types_all, "dominant": dominant,
            "dominant_share": precision[np.arange(n_units), dominant]}


def average_precision(acts: Float[np.ndarray, "token unit"], tags: Int[np.ndarray, " token"],
                      rows: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[float, float]]:
    """Exact AP and base rate for each ``(unit, tag)`` in ``rows`` (scikit-learn's step-wise AP)."""
    from sklearn.metrics import average_precision_score

    out = {}
    for u, t in rows:
        y: Bool[np.ndarray, " token"] = tags == t
        if y.any() and not y.all():
            out[(u, t)] = (float(average_precision_score(y, acts[:, u])), float(y.mean()))
        else:
            out[(u, t)] = (float("nan"), float(y.mean()))
    return out
