"""Exact ranks of unit activations: the sorting machinery behind every exact AUROC, top-k and AP.

A unit's tokens are sorted once as int64 *keys*: the activation's order-preserving bits above a
small integer *cell* (a tag, or a fold and a tag), so one value sort carries every token's cell
along. Mann–Whitney rank sums per cell then come from weighted counts of sorted positions, with
ties sharing their mean rank (as ``scipy.stats.rankdata`` and ``sklearn.metrics.roc_auc_score``).

* :func:`sort_keys`, :func:`rank_sums` — the keys and the rank sums (optionally within folds: the
  ranks each fold's tokens would get sorted alone, from the same sort);
* :func:`columns` — a block of ``[token, unit]`` activations as contiguous ``[unit, token]`` rows;
* :func:`sweep_half` — one read of a half's activations giving each unit's AUROC per fold and
  overall, its top-k rows and its mean and variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int

from tinyinterp.errors import DataError

__all__ = ["CELL_BITS", "HalfSweep", "block_rows", "columns", "key_values", "rank_sums", "sort_keys", "sweep_half", "top_rows"]

CELL_BITS = 29  # low bits of a float64 that a float32 value leaves zero: where a key carries its token's cell
CELL_MASK = (1 << CELL_BITS) - 1


def block_rows(mask: np.ndarray) -> slice | np.ndarray:
    """``mask``'s rows (a boolean mask or sorted index array) as a slice when they are one contiguous block
    (then ``acts[...]`` is a view, not a copy), else as an index array."""
    idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask, dtype=np.int64)
    return slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) and idx[-1] - idx[0] + 1 == len(idx) else idx


def columns(acts: np.ndarray, rows: slice | np.ndarray, cols: slice | np.ndarray, block: int = 256) -> np.ndarray:
    """``acts[rows, cols]`` transposed into a contiguous float32 ``[unit, token]`` array, copied ``block`` rows at
    a time (a whole-array transposed copy strides through memory; small blocks stay in cache: ~4x faster)."""
    idx = np.arange(acts.shape[0])[rows] if isinstance(rows, slice) else np.asarray(rows)
    width = len(np.arange(acts.shape[1])[cols]) if isinstance(cols, slice) else len(cols)
    out = np.empty((width, len(idx)), dtype=np.float32)
    contiguous = isinstance(rows, slice) and rows.step in (None, 1)
    for i in range(0, len(idx), block):
        j = min(i + block, len(idx))
        part = acts[idx[0] + i:idx[0] + j] if contiguous else acts[idx[i:j]]
        out[:, i:j] = part[:, cols].T
    return out


def sort_keys(a: Float[np.ndarray, "unit token"], cells: Int[np.ndarray, " token"], inplace: bool = False) -> np.ndarray:
    """Per row, the tokens as int64 keys sorted by activation: the activation's float64 bits with the token's
    cell (``0 <= cell < 2**CELL_BITS``) in the low :data:`CELL_BITS` bits, which a float32 value converted to
    float64 leaves zero. A cell moves a value by less than one float32 step, so sorting the keys as float64
    sorts by activation (ties in any order); ``key >> CELL_BITS`` is equal exactly for tied activations and
    ``key & CELL_MASK`` is the cell. ``-0.0`` is folded into ``+0.0`` (tied, as ``rankdata`` has them),
    ``±inf`` into the largest finite float32 values. ``inplace``: ``a`` (float32) may be overwritten."""
    a = np.array(a, dtype=np.float32, copy=None if inplace else True)
    np.add(a, np.float32(0.0), out=a)
    if not np.isfinite(a).all():
        if np.isnan(a).any():
            raise DataError("activations contain NaN: no exact ranking (check the model's weights)")
        big = np.finfo(np.float32).max
        np.clip(a, -big, big, out=a)
    cells = np.asarray(cells, dtype=np.int64)
    if len(cells) and (cells.min() < 0 or cells.max() > CELL_MASK):
        raise ValueError(f"sort_keys: cells must lie in [0, 2**{CELL_BITS})")
    keys = a.astype(np.float64)
    keys.view(np.int64)[...] |= cells[None, :]
    keys.sort(axis=1)
    return keys.view(np.int64)


def key_values(keys: np.ndarray) -> np.ndarray:
    """The float32 activations of :func:`sort_keys` keys (their cells cleared)."""
    return (keys & ~np.int64(CELL_MASK)).view(np.float64).astype(np.float32)


def _tie_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, size)`` of the runs of equal entries (size >= 2) of a sorted 1-D array (0-based first index)."""
    tie = np.flatnonzero(values[1:] == values[:-1])  # entry j + 1 ties with entry j
    if not len(tie):
        return tie, tie
    run = np.flatnonzero(np.r_[True, np.diff(tie) != 1])  # runs of consecutive tied pairs: one tie group each
    return tie[run], np.diff(np.r_[run, len(tie)]) + 1


def _members(first: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The indices of every member of the runs ``(first, size)``, run after run (ascending)."""
    return np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size) + np.repeat(first, size)


def rank_sums(keys: np.ndarray, n_cells: int, n_folds: int = 1) -> np.ndarray:
    """``[row, cell]`` sums of average ranks (1-based, ties share their mean rank) from :func:`sort_keys`.

    With ``n_folds > 1`` the cells are ``tag * n_folds + fold`` and the result is ``[row, 2, cell]``:
    ``[:, 0]`` ranks among all the row's tokens, ``[:, 1]`` ranks among the same fold's tokens only (a
    fold's entries keep their order in the sort, so its k-th entry has rank k in the fold). One row at
    a time: weighted counts of positions per cell, then a correction for the members of tie groups
    only (repeated contexts, e.g. every story's opening words)."""
    c, n = keys.shape
    cells_all = keys & np.int64(CELL_MASK)  # [row, token] intp
    values = keys >> CELL_BITS  # equal exactly for tied activations
    pos1 = np.arange(1, n + 1, dtype=np.float64)  # 1-based position of every sorted entry
    out = np.zeros((c, 2, n_cells))
    for r in range(c):
        cell = cells_all[r]
        first, size = _tie_runs(values[r])
        m = _members(first, size)
        out[r, 0] = np.bincount(cell, weights=pos1, minlength=n_cells)
        if len(m):
            avg = np.repeat(first + (size + 1) / 2.0, size)  # each member's group's mean 1-based rank
            out[r, 0] += np.bincount(cell[m], weights=avg - pos1[m], minlength=n_cells)
        if n_folds > 1:
            out[r, 1] = _within_fold_sums(cell, n_cells, n_folds, pos1, first, size, m)
    return out[:, 0] if n_folds == 1 else out


def _within_fold_sums(cell: np.ndarray, n_cells: int, n_folds: int, pos1: np.ndarray, first: np.ndarray,
                      size: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per cell, the sum of its entries' average ranks within their own fold (``cell % n_folds``).

    Tie groups: a group's fold-f members hold consecutive fold ranks ``r0 .. r0 + c - 1`` (in sorted order)
    and each gets their mean, so a member's correction is ``(c - 1) / 2 - j`` for the j-th of them: the
    group's starting rank cancels and only the members' order within (group, fold) is needed."""
    fold = cell % n_folds if n_folds & (n_folds - 1) else cell & (n_folds - 1)
    out = np.zeros(n_cells)
    for f in range(n_folds):
        idx = np.flatnonzero(fold == f)  # fold f's entries, in sorted order: ranks 1, 2, ...
        out += np.bincount(cell[idx], weights=pos1[:len(idx)], minlength=n_cells)
    if len(m):
        fm = fold[m]
        start = np.cumsum(size) - size  # index in m of each group's first member
        corr = np.empty(len(m))
        for f in range(n_folds):
            running = np.cumsum(fm == f)  # fold-f members so far (inclusive), along m
            before = np.r_[0, running][start]  # fold-f members in earlier groups
            count = np.r_[0, running][start + size] - before  # fold-f members of each group
            mine = fm == f
            j = running - np.repeat(before, size) - 1  # order among the group's fold-f members
            corr[mine] = ((np.repeat(count, size) - 1) / 2.0 - j)[mine]
        out += np.bincount(cell[m], weights=corr, minlength=n_cells)
    return out


def top_rows(a: Float[np.ndarray, "unit token"], k: int, kth: np.ndarray | None = None) -> Int[np.ndarray, "unit k"]:
    """Per row of ``a``, the columns of its ``k`` largest values, largest first (ties: lower column first, also
    at the k-th place): each row's k-th largest value (``kth`` when known, else from a partition), then the
    columns at or above it, ordered."""
    c, n = a.shape
    k = min(k, n)
    if k == 0 or c == 0:
        return np.empty((c, k), dtype=np.int64)
    a = a + np.float32(0.0)  # -0.0 ties +0.0
    if kth is None:
        kth = np.partition(a, n - k, axis=1)[:, n - k]
    r, j = np.divmod(np.flatnonzero(a >= kth[:, None]), n)  # k per row, more when the k-th value is tied
    order = np.lexsort((j, -a[r, j], r))  # by row, then value desc, then column asc
    r, j = r[order], j[order]
    start = np.r_[0, np.cumsum(np.bincount(r, minlength=c))[:-1]]
    return j[start[:, None] + np.arange(k)]


def _moments(a: Float[np.ndarray, "unit token"], shift_rows: int, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per row: mean and population variance (float64 sums of the values shifted by the mean of the first
    ``shift_rows``, so the variance does not cancel), ``block`` columns at a time through a float64 buffer."""
    c, n = a.shape
    shift = a[:, :shift_rows].mean(1, dtype=np.float64)
    s1, s2 = np.zeros(c), np.zeros(c)
    buf = np.empty((c, min(block, n)))
    for i in range(0, n, block):
        x = buf[:, :min(block, n - i)]
        x[...] = a[:, i:i + block]
        x -= shift[:, None]
        s1 += x.sum(1)
        s2 += np.einsum("ij,ij->i", x, x)
    m = s1 / n
    return shift + m, np.maximum(s2 / n - m ** 2, 0)


@dataclass
class HalfSweep:
    """Per-unit summaries of one set of rows (e.g. the selection half), from one read of its activations."""

    fold_auroc: np.ndarray  # [fold, unit, tag] exact AUROC on each fold's rows; NaN below min_support
    auroc: np.ndarray  # [unit, tag] exact AUROC on all the rows
    top: np.ndarray  # [unit, k] the rows (counted within ``rows``) of each unit's k largest activations
    mean: np.ndarray  # [unit] float64
    var: np.ndarray  # [unit] population variance (float64 sums of values shifted by the first rows' mean)


def sweep_half(acts: Float[np.ndarray, "token unit"], rows: slice | np.ndarray, tags: Int[np.ndarray, " row"],
               fold: Int[np.ndarray, " row"], n_folds: int, n_tags: int, min_support: int = 1, top_k: int = 0,
               max_elems: int = 1 << 24, shift_rows: int = 1 << 16) -> HalfSweep:
    """:class:`HalfSweep` of ``acts[rows]`` (``tags``/``fold``: per chosen row), ``max_elems`` values at a time."""
    tags, fold = np.asarray(tags, dtype=np.int64), np.asarray(fold, dtype=np.int64)
    n, n_units, F = len(tags), acts.shape[1], n_folds
    cells = tags * F + fold
    counts = np.bincount(cells, minlength=F * n_tags)[:F * n_tags].reshape(n_tags, F).T.astype(np.float64)  # [fold, tag]
    n_fold, u_pos = counts.sum(1, keepdims=True), counts.sum(0)
    res = HalfSweep(np.full((F, n_units, n_tags), np.nan), np.full((n_units, n_tags), np.nan),
                    np.empty((n_units, min(top_k, n)), dtype=np.int64), np.zeros(n_units), np.zeros(n_units))
    if n == 0:
        return res
    chunk = max(1, max_elems // n)
    with np.errstate(invalid="ignore", divide="ignore"):
        for u0 in range(0, n_units, chunk):
            cols = slice(u0, min(u0 + chunk, n_units))
            a = columns(acts, rows, cols)  # [chunk, row]
            res.mean[cols], res.var[cols] = _moments(a, shift_rows)
            keys = sort_keys(a, cells, inplace=True)  # a keeps its values (-0.0 becomes +0.0)
            if top_k:  # the k-th largest value read off the sorted keys
                res.top[cols] = top_rows(a, top_k, kth=key_values(keys[:, n - min(top_k, n)]))
            del a
            sums = rank_sums(keys, F * n_tags, F)
            if F == 1:
                sums = np.stack([sums, sums], 1)
            within = sums[:, 1].reshape(-1, n_tags, F).transpose(2, 0, 1)  # [fold, unit, tag]
            res.fold_auroc[:, cols] = (within - counts[:, None] * (counts[:, None] + 1) / 2) / (
                counts[:, None] * (n_fold[:, None] - counts[:, None]))
            res.auroc[cols] = (sums[:, 0].reshape(-1, n_tags, F).sum(2) - u_pos * (u_pos + 1) / 2) / (u_pos * (n - u_pos))
    for out, n_pos, total in [*zip(res.fold_auroc, counts, n_fold[:, 0]), (res.auroc, u_pos, n)]:
        out[:, (n_pos < min_support) | (total - n_pos < min_support)] = np.nan
    return res
