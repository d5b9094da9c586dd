"""The lexical baselines' id-level path returns exactly what scoring and ranking every token returns."""

import math

import numpy as np
import pytest

from tests.support.planted_units import embedding_table, planted_units
from tinyinterp.analysis.neurons.baselines import embedding_scorer, evaluate_scorer, lexical_baseline, lookup_scorer
from tinyinterp.analysis.neurons.id_scores import IdScores, TokenScores, level_ap, level_auroc
from tinyinterp.analysis.neurons.identity import IdentityConfig
from tinyinterp.analysis.stats import story_weights, weighted_auroc

CFG = IdentityConfig(n_boot=200)


def per_token(scorer):
    """The reference path: no ``score_ids``, so every test token is predicted (``W_E[token id]`` row by row) and
    ranked on its own — what the baselines computed before the id-level path."""
    return lambda ua, train, test: scorer.score_ids(ua, train, ua.token_ids[test])


def assert_same(a, b, path=""):
    """Equal (NaN equals NaN), key by key, to 1e-12: the embedding probe predicts a matrix of distinct ids on the
    fast path and one of every token on the reference path, and a BLAS may round a row differently with the
    matrix's size (equal to the last bit on the machine this was written on)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for x, y in zip(a, b):
            assert_same(x, y, path)
    else:
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12) or (math.isnan(a) and math.isnan(b)), f"{path}: {a!r} != {b!r}"


def tied_levels(rng, n_ids=300, n_levels=12, n_tok=20_000, rate=0.3):
    """Per-id scores from a few values (ties across ids), Zipf-ish id counts, a few one-class ids."""
    scores = rng.choice(rng.random(n_levels), size=n_ids)
    ids = np.minimum(rng.zipf(1.3, size=n_tok) - 1, n_ids - 1)
    p_id = np.clip(rng.random(n_ids) * 2 * rate, 0, 1)
    p_id[:10], p_id[10:20] = 0.0, 1.0
    y = rng.random(n_tok) < p_id[ids]
    return scores, ids, y


@pytest.mark.parametrize("seed", range(6))
def test_level_metrics_equal_the_per_token_metrics_with_heavy_ties(seed):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    scores, ids, y = tied_levels(rng, n_levels=[1, 2, 5, 12, 50, 300][seed])
    present = np.unique(ids)
    pos = np.bincount(ids, weights=y, minlength=len(scores))[present]
    neg = np.bincount(ids, minlength=len(scores))[present] - pos
    s_tok = scores[ids]
    assert level_auroc(scores[present], pos, neg) == float(weighted_auroc(s_tok, y))
    assert level_ap(scores[present], pos, neg) == float(average_precision_score(y, s_tok))


def test_level_metrics_without_both_classes_are_nan():
    s, pos, neg = np.array([0.2, 0.7]), np.array([3, 1]), np.array([0, 0])
    assert math.isnan(level_auroc(s, pos, neg)) and math.isnan(level_ap(s, pos, neg))
    assert math.isnan(level_ap(s, neg, pos))


def test_id_scores_equal_token_scores_column_by_column():
    rng = np.random.default_rng(3)
    scores, ids, y = tied_levels(rng, n_tok=5000)
    tags = y.astype(np.int64)
    u, inv = np.unique(ids, return_inverse=True)
    fast = IdScores(np.stack([1 - scores[u], scores[u]], 1), inv, tags, 2)
    ref = TokenScores(np.stack([1 - scores[ids], scores[ids]], 1), tags)
    assert np.array_equal(fast.scores, ref.scores) and np.array_equal(fast.column(1, np.arange(7)), ref.column(1, np.arange(7)))
    for t in (0, 1):
        assert fast.auroc(t) == ref.auroc(t) and fast.ap(t) == ref.ap(t)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN intervals, as the ranked path gives
@pytest.mark.parametrize("n_stories", [3, 40])
def test_ambiguous_bootstrap_without_ranking_equals_the_ranked_bootstrap(n_stories):
    """Scores constant within strata: 0.5 in every resample holding a pair, NaN in the others (3 stories, the
    positives all in story 0: a third of the resamples hold none), the same CI and p-value as ranking each."""
    rng = np.random.default_rng(n_stories)
    n = 400
    token_id = rng.integers(0, 6, n)
    strata = token_id * 10 + rng.integers(0, 2, n)  # (token id, word type)
    story = rng.integers(0, n_stories, n)
    y = story == 0 if n_stories == 3 else rng.random(n) < 0.4
    u, inv = np.unique(token_id, return_inverse=True)
    id_scores = rng.random((len(u), 2))
    fast = IdScores(id_scores, inv, y.astype(np.int64), 2)
    ref = TokenScores(id_scores[inv], y.astype(np.int64))
    w = story_weights(n_stories, 300, seed=1)
    never_0 = w.copy()
    never_0[:, 0] = 0  # no resample holds a pair when the positives sit in story 0: NaN interval
    rows = np.flatnonzero(rng.random(n) < 0.8)
    for weights in (w, never_0) if n_stories == 3 else (w,):
        a = fast.ambiguous_bootstrap(1, rows, y[rows], story[rows], weights, strata[rows])
        b = ref.ambiguous_bootstrap(1, rows, y[rows], story[rows], weights, strata[rows])
        for f in ("estimate", "ci_low", "ci_high", "p_value", "n_boot", "null"):
            assert_same(float(getattr(a, f)), float(getattr(b, f)), f)
    assert math.isnan(float(a.ci_low)) == (n_stories == 3)


@pytest.fixture(scope="module")
def ua():
    return planted_units(n_stories=200)


@pytest.mark.parametrize("make", [lookup_scorer, lambda: embedding_scorer(embedding_table(planted_units(n_stories=200)))],
                         ids=["lookup", "embedding"])
@pytest.mark.parametrize("unseen_ci", [False, True])
def test_evaluate_scorer_id_path_equals_the_per_token_path(ua, make, unseen_ci):
    scorer = make()
    assert hasattr(scorer, "score_ids")
    tm_fast, tm_ref = {}, {}
    fast = evaluate_scorer(ua, scorer, CFG, unseen_ci=unseen_ci, timings=tm_fast)
    ref = evaluate_scorer(ua, per_token(scorer), CFG, unseen_ci=unseen_ci, timings=tm_ref)
    assert_same(fast, ref)
    assert tm_fast["bootstrap_s"] > 0 and tm_ref["bootstrap_s"] > 0
    assert np.isfinite(fast["NOUN"]["ambiguous_auroc"]) and np.isfinite(fast["NOUN"]["unseen_auroc"])  # both tests ran


def test_lexical_baseline_on_a_tiny_model_equals_the_per_token_path():
    from tests.support.planted_neurons import make_corpus, planted_model
    from tinyinterp.analysis.neurons.job import neuron_activations

    model = planted_model()
    ua = neuron_activations(model, make_corpus(160, seed=2, ambig_rate=0.15))
    W_E = model.W_E.detach().cpu().numpy()
    lex = lexical_baseline(ua, W_E, CFG)
    for name, scorer in (("lookup", lookup_scorer()), ("embedding", embedding_scorer(W_E))):
        assert_same({t: m[name] for t, m in lex.items()}, evaluate_scorer(ua, per_token(scorer), CFG, unseen_ci=False))
    assert any(np.isfinite(m["lookup"]["ambiguous_auroc"]) for m in lex.values())  # the bootstrap path ran


def test_id_scorer_predicts_each_token_as_its_id():
    ua = planted_units(n_stories=60)
    sel, out = np.flatnonzero(ua.selection), np.flatnonzero(~ua.selection)
    for scorer in (lookup_scorer(), embedding_scorer(embedding_table(ua))):
        np.testing.assert_allclose(scorer(ua, sel, out), per_token(scorer)(ua, sel, out), rtol=1e-12, atol=1e-15)


def test_ambiguous_bootstrap_ranks_when_strata_do_not_refine_token_ids():
    rng = np.random.default_rng(5)
    n = 300
    token_id, story, y = rng.integers(0, 6, n), rng.integers(0, 30, n), rng.random(n) < 0.4
    u, inv = np.unique(token_id, return_inverse=True)
    fast = IdScores(rng.random((len(u), 2)), inv, y.astype(np.int64), 2)
    strata = token_id % 2  # two strata, each holding several ids (scores differ inside a stratum)
    w = story_weights(30, 100, seed=2)
    rows = np.arange(n)
    a = fast.ambiguous_bootstrap(1, rows, y, story, w, strata)
    b = TokenScores(fast.scores, y.astype(np.int64)).ambiguous_bootstrap(1, rows, y, story, w, strata)
    assert float(a.estimate) != 0.5 and float(a.ci_low) == float(b.ci_low) and float(a.p_value) == float(b.p_value)
