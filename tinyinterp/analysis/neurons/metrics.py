"""Exact per-unit metrics on in-memory activations: AUROC for every unit x tag, top activations, AP.

* :func:`auroc_matrix` — Mann–Whitney AUROC (ties count half) of every unit for every tag
  against all other tags, from one average-rank pass per unit; identical to
  ``sklearn.metrics.roc_auc_score``.
* :func:`fold_aurocs` — the same on several disjoint row sets and on their union (one sort of the union).
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

from tinyinterp.analysis.neurons.ranks import CELL_BITS, block_rows, columns, rank_sums, sort_keys, sweep_half, top_rows

__all__ = ["UnitColumns", "auroc_matrix", "average_precision", "fold_aurocs", "specificity", "top_tokens"]


def _auroc_from_keys(keys: np.ndarray, n_pos: np.ndarray, n_tags: int) -> np.ndarray:
    """``[row, tag]`` Mann–Whitney AUROC from :func:`~.ranks.sort_keys` output: ``(Σ positive ranks - n+(n+ + 1)/2) / (n+ n-)``."""
    n_neg = keys.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sums(keys, n_tags) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc_matrix(acts: Float[np.ndarray, "token unit"], tags: Int[np.ndarray, " token"], n_tags: int,
                 min_support: int = 1, rows: np.ndarray | slice | None = None, units: np.ndarray | None = None,
                 max_elems: int = 1 << 22) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(auroc [unit, tag], n_pos [tag], n_neg [tag])``; NaN where a tag has < ``min_support`` positives or negatives.

    ``rows``: the tokens to use (an index array, boolean mask or slice of ``acts``' rows; None: all), read a
    few units at a time, so no copy of ``acts[rows]`` is made; ``tags`` are those of the chosen rows.
    ``units``: compute only these units (the others stay NaN). Exact Mann–Whitney AUROC with ties
    counted half (average ranks), as ``sklearn.metrics.roc_auc_score``: each unit's chosen activations
    are sorted once (float32), and a tag's AUROC is ``(Σ positive ranks - n+(n+ + 1)/2) / (n+ n-)``.
    """
    if isinstance(rows, np.ndarray) and rows.dtype == bool:
        rows = np.flatnonzero(rows)
    rows = slice(None) if rows is None else rows
    tags = np.asarray(tags)
    n, n_units = len(tags), acts.shape[1]
    n_pos = np.bincount(tags, minlength=n_tags)[:n_tags].astype(np.float64) if n else np.zeros(n_tags)
    n_neg = n - n_pos
    out = np.full((n_units, n_tags), np.nan)
    ok = (n_pos >= min_support) & (n_neg >= min_support)
    todo = np.arange(n_units) if units is None else np.asarray(units, dtype=np.int64)
    if n == 0 or not ok.any() or not len(todo):
        return out, n_pos.astype(int), n_neg.astype(int)
    chunk = max(1, max_elems // n)
    for i in range(0, len(todo), chunk):
        us = todo[i:i + chunk]
        cols = slice(int(us[0]), int(us[-1]) + 1) if us[-1] - us[0] + 1 == len(us) else us
        out[us] = _auroc_from_keys(sort_keys(columns(acts, rows, cols), tags, inplace=True), n_pos, n_tags)
    out[:, ~ok] = np.nan
    return out, n_pos.astype(int), n_neg.astype(int)


def fold_aurocs(acts: Float[np.ndarray, "token unit"], tags: Int[np.ndarray, " token"], folds: list[np.ndarray],
                n_tags: int, min_support: int = 1, max_elems: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """``(per_fold [fold, unit, tag], union [unit, tag])``: exact AUROC (as :func:`auroc_matrix`) on the rows
    of each fold (disjoint index arrays into ``acts``; ``tags`` indexes all of ``acts``' rows) and on their union.

    One sort per unit of the union (:func:`~tinyinterp.analysis.neurons.ranks.sweep_half`), rows read in memory
    order (a view when the union is one contiguous block)."""
    folds = [np.asarray(f, dtype=np.int64) for f in folds]
    rows = np.concatenate(folds) if folds else np.zeros(0, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    rows, fold_id = rows[order], np.repeat(np.arange(len(folds)), [len(f) for f in folds])[order]
    sweep = sweep_half(acts, block_rows(rows), np.asarray(tags)[rows], fold_id, len(folds), n_tags, min_support,
                       max_elems=max_elems)
    return sweep.fold_auroc, sweep.auroc


def top_tokens(acts: Float[np.ndarray, "token unit"], k: int, chunk: int | None = None,
               rows: np.ndarray | slice | None = None) -> Int[np.ndarray, "unit k"]:
    """Row indices of each unit's ``k`` largest activations, largest first (ties: lower row first, also at the
    k-th place; :func:`~tinyinterp.analysis.neurons.ranks.top_rows`).

    ``rows``: only these rows of ``acts`` (index array or slice, read a chunk of units at a time); the
    indices returned then count within them."""
    rows = slice(None) if rows is None else rows
    n, n_units = len(np.arange(acts.shape[0])[rows]), acts.shape[1]
    chunk = chunk or max(1, min(256, (1 << 24) // max(n, 1)))  # units at a time: ~16M values in flight
    out = np.empty((n_units, min(k, n)), dtype=np.int64)
    for u0 in range(0, n_units, chunk):
        out[u0:u0 + chunk] = top_rows(columns(acts, rows, slice(u0, u0 + chunk)), k)
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


class UnitColumns:
    """Contiguous copies of chosen units' columns of ``acts`` (one gather, in row blocks), so tests that read
    one unit at a time do not stride through a ``[token, unit]`` array; other units are copied on demand."""

    def __init__(self, acts: Float[np.ndarray, "token unit"], units, block: int = 1 << 15):
        self.acts, units = acts, np.asarray(sorted({int(u) for u in units}), dtype=np.int64)
        self.index = {int(u): i for i, u in enumerate(units)}
        self.cols = np.empty((len(units), acts.shape[0]), dtype=np.float32)
        if len(units):
            for r0 in range(0, acts.shape[0], block):
                self.cols[:, r0:r0 + block] = acts[r0:r0 + block][:, units].T

    def __getitem__(self, unit: int) -> np.ndarray:
        i = self.index.get(int(unit))
        return self.cols[i] if i is not None else np.ascontiguousarray(self.acts[:, int(unit)], dtype=np.float32)


def _ap(x: np.ndarray, y: np.ndarray) -> float:
    """Step-wise AP of scores ``x`` for boolean ``y``, as ``sklearn.metrics.average_precision_score``: one key
    sort; precision and recall read at the end of each run of tied scores (descending)."""
    keys = sort_keys(np.asarray(x, dtype=np.float32)[None, :], y.astype(np.int64))[0, ::-1]  # descending
    v, cell = keys >> CELL_BITS, keys & 1
    last = np.flatnonzero(np.r_[v[1:] != v[:-1], True])  # end of each tie run
    tps = np.cumsum(cell.astype(np.int64))[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def average_precision(acts: "Float[np.ndarray, 'token unit'] | UnitColumns", tags: Int[np.ndarray, " token"],
                      rows: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[float, float]]:
    """Exact AP and base rate for each ``(unit, tag)`` in ``rows`` (scikit-learn's step-wise AP)."""
    cols = acts if isinstance(acts, UnitColumns) else UnitColumns(acts, [u for u, _ in rows])
    out = {}
    for u, t in rows:
        y: Bool[np.ndarray, " token"] = tags == t
        if y.any() and not y.all():
            out[(u, t)] = (_ap(cols[u], y), float(y.mean()))
        else:
            out[(u, t)] = (float("nan"), float(y.mean()))
    return out
