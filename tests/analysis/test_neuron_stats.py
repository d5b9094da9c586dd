"""Binned AUROC / AP, Mann–Whitney p-values, moments and BH against exact references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from tinyinterp.analysis.neurons.stats import TagStats, quantile_edges, run_tests
from tinyinterp.analysis.stats import bh_qvalues


def _stats_for(x: np.ndarray, tags: np.ndarray, edges: torch.Tensor, n_tags: int, chunks: int = 3) -> TagStats:
    ts = TagStats(edges, torch.zeros(x.shape[1]), n_tags)
    for part in np.array_split(np.arange(len(x)), chunks):  # streamed in pieces
        ts.update(torch.as_tensor(x[part]), torch.as_tensor(tags[part]))
    return ts


def test_binned_auroc_is_within_its_error_bound_of_the_exact_value():
    rng = np.random.default_rng(0)
    n, n_tags = 4000, 3
    tags = rng.integers(0, n_tags, n)
    shift = np.array([[0.0, 1.0, -0.5], [0.2, 0.0, 0.0]])  # unit × tag mean shifts
    x = rng.normal(size=(n, 2)) + shift.T[tags]  # [tok, unit]
    edges = quantile_edges(torch.as_tensor(rng.normal(size=(3000, 2)) + 0.3), n_bins=64)
    ts = _stats_for(x, tags, edges, n_tags)
    res = run_tests(ts, min_support=10)
    chunked = run_tests(ts, min_support=10, chunk_units=1)
    for name in ("auroc", "auroc_err", "ap", "p_value", "cohens_d"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(res, name))
    for u in range(2):
        for t in range(n_tags):
            exact = roc_auc_score(tags == t, x[:, u])
            assert abs(res.auroc[u, t] - exact) <= res.auroc_err[u, t] + 1e-12
            assert res.auroc_err[u, t] < 0.01
            assert abs(res.ap[u, t] - average_precision_score(tags == t, x[:, u])) < 0.02
            pos, neg = x[tags == t, u], x[tags != t, u]
            assert res.mean_diff[u, t] == pytest.approx(pos.mean() - neg.mean(), abs=1e-6)  # activations are float32
            sd = np.sqrt(((len(pos) - 1) * pos.var(ddof=1) + (len(neg) - 1) * neg.var(ddof=1)) / (n - 2))
            assert res.cohens_d[u, t] == pytest.approx((pos.mean() - neg.mean()) / sd, rel=1e-6)
    assert res.auroc[1, 0] > 0.53 and res.auroc[0, 1] > 0.7 and res.auroc[0, 2] < 0.4  # not a constant


def test_discrete_data_give_exact_auroc_ap_and_scipy_mannwhitney():
    rng = np.random.default_rng(1)
    n = 600
    tags = rng.integers(0, 2, n)
    x = np.clip(rng.poisson(3 + 2 * tags), 0, 9).astype(float)[:, None]  # integer values 0…9
    edges = torch.arange(9, dtype=torch.float32)[None] + 0.5  # one bin per value: binning is lossless
    res = run_tests(_stats_for(x, tags, edges, 2), min_support=5)
    assert res.auroc[0, 1] == pytest.approx(roc_auc_score(tags == 1, x[:, 0]), abs=1e-12)
    assert res.ap[0, 1] == pytest.approx(average_precision_score(tags == 1, x[:, 0]), abs=1e-12)
    for t in (0, 1):
        ref = stats.mannwhitneyu(x[tags == t, 0], x[tags != t, 0], alternative="greater", method="asymptotic")
        assert res.p_value[0, t] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
    assert res.p_value[0, 1] < 1e-6 < 0.5 < res.p_value[0, 0]


def test_support_and_bh():
    tags = np.array([0] * 50 + [1] * 3)
    x = np.random.default_rng(2).normal(size=(53, 1))
    res = run_tests(_stats_for(x, tags, quantile_edges(torch.as_tensor(x), 8), 2), min_support=5)
    assert res.valid.tolist() == [[False, False]]  # tag 1 has 3 tokens: neither test has support
    assert np.isnan(res.auroc).all() and np.isnan(res.p_value).all()
    p = np.array([[0.001, np.nan], [0.04, 0.3]])
    q = bh_qvalues(p)
    assert np.isnan(q[0, 1])
    np.testing.assert_allclose(q[np.isfinite(p)], stats.false_discovery_control([0.001, 0.04, 0.3]))


def test_state_dicts_of_two_halves_merge_to_the_whole():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(400, 5, generator=g)
    tags = torch.randint(0, 3, (400,), generator=g)
    edges = quantile_edges(x[:200], 16)
    shift = edges[:, 8]
    whole, a, b = (TagStats(edges, shift, 3) for _ in range(3))
    whole.update(x, tags)
    a.update(x[:150], tags[:150])
    b.update(x[150:], tags[150:])
    a.merge_state(b.state_dict())
    assert set(a.state_dict()) == {"hist", "sum", "sumsq"}
    for k, v in whole.state_dict().items():  # counts exactly; moments up to float32 batch sums
        torch.testing.assert_close(a.state_dict()[k], v, rtol=1e-5, atol=1e-5)
        assert v.is_floating_point() or torch.equal(a.state_dict()[k], v)
