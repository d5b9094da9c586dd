"""Streaming unit × tag statistics: binned AUROC / average precision, Mann–Whitney tests, moments, BH.

Method. Before streaming, each unit's activation range is cut into ``n_bins`` bins at the
quantiles of a calibration sample (drawn from the *selection* half, so the bins never depend
on the held-out data; the two end bins are open). Every batch then adds to a fixed-size
count array ``hist[unit, tag, bin]`` plus exact float64 sums and sums of squares per
unit × tag. From the counts:

* AUROC (tag tokens vs all other analysed tokens) = P(x_pos > x_neg) + ½ P(tie), with
  tokens in the same bin counted as ties. The error against the exact AUROC is at most
  ``½ Σ_b pos_b neg_b / (P N)``, reported per test as ``auroc_err``; with quantile bins it is
  about ``1 / (2 n_bins)`` at worst (≈ 0.004 for 128 bins) and usually far smaller.
* Average precision as scikit-learn computes it when the scores are the bin indices.
* A one-sided Mann–Whitney U test (H1: tag tokens activate more) with the normal
  approximation, tie and continuity corrections, on the binned values. This is a valid test
  of the discretised activations because the bins are fixed before the held-out data is seen.
  It treats tokens as independent, which tokens within a story are not, so p-values are
  optimistic; selectivity therefore also requires an effect size (AUROC threshold).
* Mean difference and Cohen's d (pooled SD) from the exact moments.

Memory is ``units × tags × n_bins`` counts whatever the corpus size. Binning a value is an
exact ``searchsorted`` against its unit's edges, done mostly by table lookup (:class:`Binner`,
a few times faster than ``torch.searchsorted`` on CPU); moments are two matrix products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from scipy import stats
from torch import Tensor

from tinyinterp.errors import ConfigError, DataError

_CHUNK_ELEMS = 1 << 22  # unit × token elements processed at once (bounds temporary memory)


def quantile_edges(sample: Float[Tensor, "tok unit"], n_bins: int) -> Float[Tensor, "unit edge"]:
    """Per-unit bin edges at the ``1/n_bins … (n_bins-1)/n_bins`` quantiles of ``sample``."""
    if sample.shape[0] < 2:
        raise DataError("fewer than 2 analysable tokens to place bin edges; use more (tagged) stories")
    if n_bins < 2:
        raise ConfigError(f"n_bins={n_bins}: need at least 2 bins")
    levels = torch.arange(1, n_bins, dtype=torch.float64) / n_bins
    idx = (levels * (sample.shape[0] - 1)).round().long()
    if sample.device.type != "cpu":
        return sample.float().T.contiguous().sort(1).values[:, idx.to(sample.device)].contiguous()
    out = torch.empty((sample.shape[1], n_bins - 1), dtype=torch.float32)
    step = max(1, (1 << 21) // max(sample.shape[0], 1))  # units per chunk: small temporary copies
    for c0 in range(0, sample.shape[1], step):
        s = sample[:, c0:c0 + step].float().T.contiguous().numpy()  # [unit_chunk, tok]
        s.sort(axis=1)  # numpy sorts float32 several times faster than torch on CPU
        out[c0:c0 + step] = torch.from_numpy(s[:, idx.numpy()])
    return out  # [unit, n_bins - 1], non-decreasing per row


class Binner:
    """Exact ``torch.searchsorted(edges, x, right=True)`` per unit, mostly by table lookup.

    Each unit's range ``[edges[0], edges[-1]]`` is cut into ``cells`` equal cells; the cell of
    a value is ``floor(x * inv + off)`` (clamped), a monotone function of ``x``, so every edge
    in a lower cell lies below the value and every edge in a higher cell above it. Two tables
    per cell give the number of edges in lower cells (plus ``unit * stride``, so the result can
    index a flat ``[unit, stride]`` histogram directly) and the one edge inside the cell to
    compare with (+inf: none; NaN: several). Values in cells with several edges finish with a
    short vectorised binary search among that cell's edges.
    """

    def __init__(self, edges: Float[Tensor, "unit edge"], cells: int = 4096, stride: int = 0):
        self.edges = edges.float().contiguous()
        n_units, n_edges = self.edges.shape
        lo, hi = self.edges[:, 0], self.edges[:, -1]
        span = hi - lo
        ok = torch.isfinite(span) & (span > 0)
        self.cells, self.stride = cells, stride
        self.inv = torch.where(ok, cells / torch.where(ok, span, torch.ones_like(span)), torch.zeros_like(span))[:, None]
        self.off = torch.where(ok, -(lo * self.inv[:, 0]), torch.zeros_like(lo))[:, None]
        c_e = self.cell(self.edges)  # [unit, edge]
        cnt = torch.zeros((n_units, cells + 1), dtype=torch.long, device=edges.device)
        cnt.scatter_add_(1, c_e, torch.ones_like(c_e))
        base = torch.cumsum(cnt, 1) - cnt  # [unit, cell + 1]: edges in lower cells
        self.base = base.to(torch.int32).contiguous()
        first = self.edges.gather(1, base[:, :cells].clamp(max=n_edges - 1))
        cnt = cnt[:, :cells]
        self.thr = torch.where(cnt >= 2, torch.nan, torch.where(cnt >= 1, first, torch.inf)).contiguous()  # [unit, cell]
        unit = torch.arange(n_units, device=edges.device)[:, None] * stride
        self.base_off = (base[:, :cells] + unit).to(torch.int32).contiguous()  # [unit, cell]
        self.steps = int(cnt.max()).bit_length()  # binary-search steps for the fullest cell

    def cell(self, x: Float[Tensor, "unit tok"], rows: slice = slice(None)) -> Int[Tensor, "unit tok"]:
        t = x * self.inv[rows]  # two separately rounded ops (no fused multiply-add): identical wherever run
        t += self.off[rows]
        return t.floor_().clamp_(0, self.cells - 1).long()

    def __call__(self, x: Float[Tensor, "unit tok"], rows: slice = slice(None)) -> Int[Tensor, "unit tok"]:
        """int32 ``bin + unit * stride`` (bin in ``0 … n_edges``) for each value of ``x`` (units ``rows``)."""
        c = self.cell(x, rows)
        thr = self.thr[rows].gather(1, c)
        out = self.base_off[rows].gather(1, c)
        out.add_(x >= thr)
        lin = torch.isnan(thr).view(-1).nonzero()[:, 0]
        if len(lin):  # cells with several edges: binary search between the cell's first and last edge
            n_tok, n_edges = x.shape[1], self.edges.shape[1]
            u = lin // n_tok
            cu = c.view(-1)[lin]
            base = self.base[rows]
            lo, hi = base[u, cu].long(), base[u, cu + 1].long()
            v = x.reshape(-1)[lin]
            flat = self.edges[rows].reshape(-1)
            row0 = u * n_edges
            for _ in range(self.steps):
                mid = (lo + hi) // 2
                go = (lo < hi) & (flat[row0 + mid.clamp(max=n_edges - 1)] <= v)
                hi = torch.where((lo < hi) & ~go, mid, hi)
                lo = torch.where(go, mid + 1, lo)
            first_unit = rows.start or 0
            out.view(-1)[lin] = (lo + (u + first_unit) * self.stride).to(out.dtype)
        return out


def _count(hist: Tensor, idx: Tensor) -> None:
    """``hist.view(-1)[i] += 1`` for every flat index in ``idx`` (int32), without a histogram-sized temporary."""
    flat = hist.view(-1)
    flat.index_add_(0, idx.reshape(-1), torch.ones(1, dtype=flat.dtype, device=flat.device).expand(idx.numel()))


class TagStats:
    """Fixed-size histograms and moments per unit × tag, updated one batch of tokens at a time."""

    def __init__(self, edges: Float[Tensor, "unit edge"], shift: Float[Tensor, " unit"], n_tags: int,
                 binner: Binner | None = None):
        self.edges = edges.float().contiguous()
        self.shift = shift.double().to(edges.device)  # subtracted before summing (numerical stability)
        self.shift32 = self.shift.float()
        self.n_units, self.n_bins, self.n_tags = edges.shape[0], edges.shape[1] + 1, n_tags
        stride = n_tags * self.n_bins
        if binner is not None and binner.stride != stride:
            raise ConfigError(f"TagStats: the shared Binner has stride {binner.stride}, need n_tags * n_bins = {stride}")
        self.binner = binner if binner is not None else Binner(self.edges, stride=stride)  # shareable over the same edges
        dev = edges.device
        self.hist = torch.zeros((self.n_units, n_tags, self.n_bins), dtype=torch.long, device=dev)
        self.sum = torch.zeros((self.n_units, n_tags), dtype=torch.float64, device=dev)
        self.sumsq = torch.zeros((self.n_units, n_tags), dtype=torch.float64, device=dev)

    def update(self, acts: Float[Tensor, "tok unit"], tags: Int[Tensor, " tok"]) -> None:
        """Add one batch: activations of analysed tokens and their tag ids (0…n_tags-1)."""
        n_tok = acts.shape[0]
        if n_tok == 0:
            return
        step = max(1, _CHUNK_ELEMS // n_tok)
        for c0 in range(0, self.n_units, step):
            c1 = min(c0 + step, self.n_units)
            self.update_units(acts[:, c0:c1].T.float().contiguous(), tags, c0)

    def update_units(self, x: Float[Tensor, "unit tok"], tags: Int[Tensor, " tok"], first_unit: int = 0) -> None:
        """:meth:`update` with activations already as ``[unit, tok]`` (contiguous float32) for units
        ``first_unit …`` (all units when ``first_unit`` is 0 and ``x`` has every row)."""
        n_tok = x.shape[1]
        if n_tok == 0:
            return
        c0, c1 = first_unit, first_unit + x.shape[0]
        tags = tags.to(x.device)
        nt, nb = self.n_tags, self.n_bins
        idx = self.binner(x, slice(c0, c1))  # bin + unit * nt * nb, unit counted from 0
        if c0:
            idx -= c0 * nt * nb
        idx += (tags * nb).to(torch.int32)[None, :]
        _count(self.hist[c0:c1], idx)
        # moments: float32 sums over one batch, accumulated across batches in float64
        onehot = torch.nn.functional.one_hot(tags, nt).float()  # [tok, tag]
        d = x - self.shift32[c0:c1, None]  # [unit_chunk, tok]
        self.sum[c0:c1] += (d @ onehot).double()
        self.sumsq[c0:c1] += (d.square_() @ onehot).double()

    STATE = ("hist", "sum", "sumsq")  # the sums a shard contributes

    def state_dict(self) -> dict[str, Tensor]:
        """The accumulated counts and moments (CPU tensors); bins and shift are set up from the calibration."""
        return {k: getattr(self, k).cpu() for k in self.STATE}

    def merge_state(self, state: dict[str, Tensor]) -> None:
        """Add the :meth:`state_dict` of a :class:`TagStats` over other tokens, with the same bins."""
        for k in self.STATE:
            getattr(self, k).add_(state[k].to(getattr(self, k).device))

    @property
    def support(self) -> np.ndarray:
        """int64 [n_tags]: analysed tokens per tag."""
        return self.hist[0].sum(-1).cpu().numpy()

    @property
    def n_tokens(self) -> int:
        return int(self.hist[0].sum())


def auroc_from_hist(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC (ties count ½) and its worst-case binning error from counts ``[..., bin]``."""
    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    n_pairs = pos.sum(-1) * neg.sum(-1)
    below = np.cumsum(neg, -1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(-1) / n_pairs
        err = 0.5 * (pos * neg).sum(-1) / n_pairs
    return auc, err


def ap_from_hist(pos: np.ndarray, tot: np.ndarray) -> np.ndarray:
    """Average precision (highest bin first; a bin's tokens enter together) from ``[..., bin]``."""
    pos, tot = pos.astype(np.float64), tot.astype(np.float64)
    cpos = np.cumsum(pos[..., ::-1], -1)
    ctot = np.cumsum(tot[..., ::-1], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(ctot > 0, cpos / np.maximum(ctot, 1), 0.0)
        return (pos[..., ::-1] * prec).sum(-1) / pos.sum(-1)


def mannwhitney_greater(auc: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray, tot: np.ndarray) -> np.ndarray:
    """One-sided Mann–Whitney p-value (positives larger) with tie and continuity correction.

    ``tot`` [..., bin] are the counts of all tokens per bin (the tie groups) for each test.
    """
    n_pos, n_neg = n_pos.astype(np.float64), n_neg.astype(np.float64)
    n = n_pos + n_neg
    t = tot.astype(np.float64)
    ties = (t ** 3 - t).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = n_pos * n_neg / 12.0 * ((n + 1) - ties / (n * (n - 1)))
        z = (auc * n_pos * n_neg - n_pos * n_neg / 2.0 - 0.5) / np.sqrt(var)
    p = stats.norm.sf(z)
    return np.where(var > 0, p, 1.0)


@dataclass
class TagTests:
    """Per unit × tag results of one :class:`TagStats`; every array is ``[unit, tag]``."""

    n_pos: np.ndarray
    n_neg: np.ndarray
    valid: np.ndarray  # bool; both groups have at least ``min_support`` tokens
    auroc: np.ndarray
    auroc_err: np.ndarray
    ap: np.ndarray
    mean_pos: np.ndarray
    mean_neg: np.ndarray
    mean_diff: np.ndarray
    cohens_d: np.ndarray
    p_value: np.ndarray  # NaN where not valid (token-level: optimistic; the decision uses story-level tests)


def _hist_tests(hist: np.ndarray) -> tuple[np.ndarray, ...]:
    """n_pos, n_neg, AUROC, its error bound, AP and p-value from counts ``[unit, tag, bin]``."""
    tot = hist.sum(1, keepdims=True)  # [unit, 1, bin]
    neg = tot - hist
    n_pos, n_neg = hist.sum(-1), neg.sum(-1)
    auc, err = auroc_from_hist(hist, neg)
    ap = ap_from_hist(hist, np.broadcast_to(tot, hist.shape))
    return n_pos, n_neg, auc, err, ap, mannwhitney_greater(auc, n_pos, n_neg, tot)


def run_tests(ts: TagStats, min_support: int, chunk_units: int = 256) -> TagTests:
    """Compute every statistic from the accumulated counts and moments (``chunk_units`` at a time)."""
    parts = [_hist_tests(ts.hist[c:c + chunk_units].cpu().numpy()) for c in range(0, ts.n_units, chunk_units)]
    n_pos, n_neg, auc, err, ap, p = (np.concatenate(x) for x in zip(*parts))
    valid = (n_pos >= min_support) & (n_neg >= min_support)
    shift = ts.shift.cpu().numpy()[:, None]
    s, ss = ts.sum.cpu().numpy(), ts.sumsq.cpu().numpy()
    s_all, ss_all = s.sum(1, keepdims=True), ss.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        m_pos, m_neg = s / n_pos, (s_all - s) / n_neg
        var_pos = np.maximum(ss - n_pos * m_pos ** 2, 0) / (n_pos - 1)
        var_neg = np.maximum((ss_all - ss) - n_neg * m_neg ** 2, 0) / (n_neg - 1)
        pooled = np.sqrt(((n_pos - 1) * var_pos + (n_neg - 1) * var_neg) / (n_pos + n_neg - 2))
        d = np.where(pooled > 0, (m_pos - m_neg) / pooled, 0.0)
    nan = lambda a: np.where(valid, a, np.nan)  # noqa: E731
    out = TagTests(n_pos=n_pos, n_neg=n_neg, valid=valid, auroc=nan(auc), auroc_err=nan(err), ap=nan(ap),
                   mean_pos=nan(m_pos + shift), mean_neg=nan(m_neg + shift), mean_diff=nan(m_pos - m_neg),
                   cohens_d=nan(d), p_value=nan(p))
    return out
