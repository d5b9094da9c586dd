"""Story-level statistics: exactness of the weighted AUROC, and bootstrap intervals that respect stories."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tinyinterp.analysis.stats import (bh_qvalues, bootstrap_auroc, bootstrap_mean, min_resamples, story_sums,
                                       story_weights, weighted_auroc)


def test_weighted_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 400).astype(float)  # many ties
    y = rng.random(400) < 0.3 + 0.1 * s
    assert weighted_auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_integer_weights_equal_repeating_tokens():
    rng = np.random.default_rng(1)
    s, y = rng.normal(size=200), rng.random(200) < 0.4
    w = rng.integers(0, 4, 200)
    rep = np.repeat(np.arange(200), w)
    got = weighted_auroc(s, y, w[None, :])[0]
    assert got == pytest.approx(roc_auc_score(y[rep], s[rep]), abs=1e-12)


def test_auroc_nan_without_both_classes():
    assert np.isnan(weighted_auroc(np.arange(5.0), np.ones(5, bool)))


def test_story_bootstrap_is_wider_than_token_bootstrap_for_clustered_data():
    # 40 stories, 50 tokens each; the value is shared within a story (perfect clustering).
    rng = np.random.default_rng(2)
    n_st, per = 40, 50
    story = np.repeat(np.arange(n_st), per)
    vals = rng.normal(size=n_st)[story]
    w = story_weights(n_st, 2000, seed=0)
    res = bootstrap_mean(story_sums(vals, story, n_st), np.bincount(story), w)
    tok = np.arange(story.size)
    w_tok = story_weights(story.size, 2000, seed=0)
    res_tok = bootstrap_mean(story_sums(vals, tok, story.size), np.ones(story.size), w_tok)
    width, width_tok = res.ci_high - res.ci_low, res_tok.ci_high - res_tok.ci_low
    assert width > 4 * width_tok  # sqrt(50) ~ 7 in expectation
    # the story interval has the right scale: the SE of a mean of 40 unit normals ~ 0.16
    assert 0.4 < width < 0.9


def test_bootstrap_auroc_detects_real_signal_and_not_noise():
    rng = np.random.default_rng(3)
    n_st, per = 60, 30
    story = np.repeat(np.arange(n_st), per)
    y = rng.random(story.size) < 0.3
    w = story_weights(n_st, 500, seed=1)
    sig = bootstrap_auroc(y + rng.normal(scale=1.0, size=y.size), y, story, w)
    assert sig.ci_low > 0.6 and sig.p_value < 1e-6
    noise = bootstrap_auroc(rng.normal(size=y.size), y, story, w)
    assert noise.ci_low < 0.5 < noise.ci_high and noise.p_value > 0.01


def test_bh_and_resample_budget():
    p = np.array([0.001, 0.01, 0.02, np.nan, 0.9])
    q = bh_qvalues(p)
    assert np.isnan(q[3]) and q[0] == pytest.approx(0.004)
    assert min_resamples(168, 0.05) == 3360


def _pairs_auroc(s, y, g, w=None):
    """Brute force: within-stratum pairs only (ties half), weighted by token weights."""
    w = np.ones(len(s)) if w is None else w
    num = den = 0.0
    for i in np.flatnonzero(y):
        for j in np.flatnonzero(~y & (g == g[i])):
            ww = w[i] * w[j]
            num += ww * ((s[i] > s[j]) + 0.5 * (s[i] == s[j]))
            den += ww
    return num / den


def test_stratified_auroc_matches_brute_force_with_ties_and_weights():
    rng = np.random.default_rng(4)
    n = 150
    g = rng.integers(0, 6, n)
    s = rng.integers(0, 4, n).astype(float) + 0.5 * g  # ties, and a stratum effect
    y = rng.random(n) < 0.2 + 0.1 * (g % 3)
    assert weighted_auroc(s, y, strata=g) == pytest.approx(_pairs_auroc(s, y, g), abs=1e-12)
    w = rng.integers(0, 3, (3, n)).astype(float)
    got = weighted_auroc(s, y, w, strata=g)
    for r in range(3):
        assert got[r] == pytest.approx(_pairs_auroc(s, y, g, w[r]), abs=1e-12)


def test_stratified_auroc_gives_identity_lookups_exactly_half():
    # a score that is a function of the stratum (word type) alone carries no within-type signal
    rng = np.random.default_rng(5)
    g = rng.integers(0, 20, 2000)
    y = rng.random(2000) < np.linspace(0.05, 0.95, 20)[g]
    lookup = np.bincount(g, weights=y) / np.bincount(g)
    assert weighted_auroc(lookup[g], y) > 0.8  # pooled AUROC rewards identity
    assert weighted_auroc(lookup[g], y, strata=g) == pytest.approx(0.5)


def test_bootstrap_auroc_chunks_match_one_block():
    rng = np.random.default_rng(6)
    story = np.repeat(np.arange(30), 20)
    g = rng.integers(0, 5, story.size)
    y = rng.random(story.size) < 0.4
    s = y + rng.normal(size=story.size)
    w = story_weights(30, 250, seed=0)
    a = bootstrap_auroc(s, y, story, w, strata=g, chunk=7)
    b = bootstrap_auroc(s, y, story, w, strata=g, chunk=1000)
    assert a.ci_low == pytest.approx(b.ci_low) and a.p_value == pytest.approx(b.p_value)


def test_story_pair_bootstrap_matches_the_token_bootstrap():
    from tinyinterp.analysis.stats import story_pair_bootstrap_auroc

    rng = np.random.default_rng(3)
    story = rng.integers(0, 40, 3000)
    y = rng.random(3000) < 0.2
    x = np.round(rng.normal(size=3000) + 0.8 * y + 0.3 * (story % 3), 1)  # ties and story effects
    w = story_weights(40, 300, seed=1)
    a, b = bootstrap_auroc(x, y, story, w), story_pair_bootstrap_auroc(x, y, story, w)
    for k in ("estimate", "ci_low", "ci_high", "p_value"):
        assert np.allclose(getattr(a, k), getattr(b, k), rtol=1e-9, atol=1e-12), k
