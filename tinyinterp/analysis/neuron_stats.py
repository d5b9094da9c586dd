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

Memory is ``units × tags × n_bins`` counts whatever the corpus size.
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
    s = sample.float().T.contiguous().sort(1).values  # [unit, tok]
    levels = torch.arange(1, n_bins, dtype=torch.float64) / n_bins
    idx = (levels * (s.shape[1] - 1)).round().long().to(s.device)
    return s[:, idx].contiguous()  # [unit, n_bins - 1], non-decreasing per row


class TagStats:
    """Fixed-size histograms and moments per unit × tag, updated one batch of tokens at a time.

    With ``ambiguous`` (bool ``[n_words, n_tags]``: the word type takes this tag and another)
    it also keeps, per unit × tag, histograms restricted to ambiguous word types: tokens of
    words ambiguous for tag t, split by whether they carry t (label 1) or not (label 0).
    """

    def __init__(self, edges: Float[Tensor, "unit edge"], shift: Float[Tensor, " unit"], n_tags: int,
                 ambiguous: np.ndarray | None = None):
        self.edges = edges.float().contiguous()
        self.shift = shift.double().to(edges.device)  # subtracted before summing (numerical stability)
        self.n_units, self.n_bins, self.n_tags = edges.shape[0], edges.shape[1] + 1, n_tags
        dev = edges.device
        self.hist = torch.zeros((self.n_units, n_tags, self.n_bins), dtype=torch.long, device=dev)
        self.sum = torch.zeros((self.n_units, n_tags), dtype=torch.float64, device=dev)
        self.sumsq = torch.zeros((self.n_units, n_tags), dtype=torch.float64, device=dev)
        self.ambiguous = None if ambiguous is None else torch.as_tensor(ambiguous, dtype=torch.bool, device=dev)
        self.amb_hist = (None if ambiguous is None else
                         torch.zeros((self.n_units, n_tags, 2, self.n_bins), dtype=torch.long, device=dev))

    def update(self, acts: Float[Tensor, "tok unit"], tags: Int[Tensor, " tok"], words: Int[Tensor, " tok"] | None = None) -> None:
        """Add one batch: activations of analysed tokens, their tag ids (0…n_tags-1) and word ids."""
        n_tok = acts.shape[0]
        if n_tok == 0:
            return
        tags = tags.to(acts.device)
        pair_tok = pair_tag = pair_lab = None
        if self.amb_hist is not None:
            if words is None:
                raise ConfigError("TagStats with ambiguous words needs word ids in update()")
            pair_tok, pair_tag = self.ambiguous[words.to(acts.device)].nonzero(as_tuple=True)  # (token, tag) pairs
            pair_lab = (tags[pair_tok] == pair_tag).long()
        step = max(1, _CHUNK_ELEMS // n_tok)
        nt, nb = self.n_tags, self.n_bins
        for c0 in range(0, self.n_units, step):
            c1 = min(c0 + step, self.n_units)
            x = acts[:, c0:c1].T.float().contiguous()  # [unit_chunk, tok]
            b = torch.searchsorted(self.edges[c0:c1], x, right=True)  # [unit_chunk, tok], in 0…nb-1
            unit = torch.arange(c1 - c0, device=x.device)[:, None]
            idx = (unit * nt + tags[None, :]) * nb + b
            self.hist[c0:c1] += torch.bincount(idx.flatten(), minlength=(c1 - c0) * nt * nb).view(c1 - c0, nt, nb)
            d = x.double() - self.shift[c0:c1, None]  # [unit_chunk, tok]
            self.sum[c0:c1].index_add_(1, tags, d)
            self.sumsq[c0:c1].index_add_(1, tags, d * d)
            if pair_tok is not None and len(pair_tok):
                idx = ((unit * nt + pair_tag[None, :]) * 2 + pair_lab[None, :]) * nb + b[:, pair_tok]
                self.amb_hist[c0:c1] += torch.bincount(
                    idx.flatten(), minlength=(c1 - c0) * nt * 2 * nb).view(c1 - c0, nt, 2, nb)

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


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values over the finite entries of ``p`` (NaN elsewhere)."""
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(np.clip(p[ok], 0.0, 1.0), method="bh")
    return q


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
    p_value: np.ndarray  # NaN where not valid
    ambiguous_auroc: np.ndarray | None = None  # NaN where too few ambiguous tokens
    ambiguous_n_pos: np.ndarray | None = None
    ambiguous_n_neg: np.ndarray | None = None


def _hist_tests(hist: np.ndarray) -> tuple[np.ndarray, ...]:
    """n_pos, n_neg, AUROC, its error bound, AP and p-value from counts ``[unit, tag, bin]``."""
    tot = hist.sum(1, keepdims=True)  # [unit, 1, bin]
    neg = tot - hist
    n_pos, n_neg = hist.sum(-1), neg.sum(-1)
    auc, err = auroc_from_hist(hist, neg)
    ap = ap_from_hist(hist, np.broadcast_to(tot, hist.shape))
    return n_pos, n_neg, auc, err, ap, mannwhitney_greater(auc, n_pos, n_neg, tot)


def run_tests(ts: TagStats, min_support: int, ambiguous_min_support: int = 10, chunk_units: int = 256) -> TagTests:
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
    if ts.amb_hist is not None:
        a_auc, a_pos, a_neg = [], [], []
        for c in range(0, ts.n_units, chunk_units):
            amb = ts.amb_hist[c:c + chunk_units].cpu().numpy()  # [unit, tag, label, bin]
            a_auc.append(auroc_from_hist(amb[:, :, 1], amb[:, :, 0])[0])
            a_pos.append(amb[:, :, 1].sum(-1))
            a_neg.append(amb[:, :, 0].sum(-1))
        a_pos, a_neg = np.concatenate(a_pos), np.concatenate(a_neg)
        ok = (a_pos >= ambiguous_min_support) & (a_neg >= ambiguous_min_support)
        out.ambiguous_auroc = np.where(ok, np.concatenate(a_auc), np.nan)
        out.ambiguous_n_pos, out.ambiguous_n_neg = a_pos, a_neg
    return out
