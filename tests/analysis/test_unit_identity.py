"""Planted truth for the identity rules: part-of-speech units vs token detectors vs lookups."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.support.planted_units import IDENT_UNITS, LIST_UNIT, NOISE_UNITS, NOUN_UNIT, ONE_UNIT, planted_units
from tinyinterp.analysis.neurons.identity import IdentityConfig, classify_units
from tinyinterp.analysis.neurons.metrics import auroc_matrix, average_precision, fold_aurocs, specificity, top_tokens
from tinyinterp.errors import ConfigError

CFG = IdentityConfig(n_boot=300)


@pytest.fixture(scope="module")
def planted():
    ua = planted_units()
    return ua, classify_units(ua, CFG)


def _row(res, unit, tag):
    rows = [r for r in res.rows if r["unit"] == unit and r["tag"] == tag]
    return rows[0] if rows else None


def test_noun_unit_that_reads_the_slot_is_pos_and_passes_the_ambiguous_word_test(planted):
    _, res = planted
    r = _row(res, NOUN_UNIT, "NOUN")
    assert r["category"] == "pos" and r["reasons"] == []
    assert r["ambiguous_ci_low"] > 0.5 and r["ambiguous_q"] < 0.05  # "play" as a noun vs "play" as a verb
    assert r["unseen_auroc"] >= CFG.unseen_auroc_threshold and r["n_top_types"] >= CFG.min_top_types
    assert r["auroc_ci"][0] > 0.9 and r["unseen_ci"][0] > 0.8


def test_unit_wired_to_the_word_one_is_token_not_num_pos(planted):
    _, res = planted
    r = _row(res, ONE_UNIT, "NUM")
    assert r is not None and r["replicated"]  # it looks like a NUM unit by AUROC ...
    assert r["category"] == "token"  # ... but one word type carries it
    assert r["n_top_types"] == 1 and "word types among top activations" in r["reasons"]
    assert not any(x["category"] == "pos" for x in res.rows if x["unit"] == ONE_UNIT)


def test_unit_firing_on_a_list_of_noun_types_is_token_via_the_ambiguous_words(planted):
    _, res = planted
    r = _row(res, LIST_UNIT, "NOUN")
    assert r["category"] == "token" and r["reasons"] == ["ambiguous words"]
    assert abs(r["ambiguous_auroc"] - 0.5) < 0.1  # within a word type it has nothing to say


def test_lookup_perfect_tag_without_a_unit_and_identity_units_give_no_pos_row(planted):
    _, res = planted
    pos = [(r["unit"], r["tag"]) for r in res.rows if r["category"] == "pos"]
    assert pos == [(NOUN_UNIT, "NOUN")]
    assert not any(r["tag"] == "PUNCT" and r["category"] == "pos" for r in res.rows)
    assert not any(r["unit"] in IDENT_UNITS + NOISE_UNITS and r["category"] for r in res.rows)


def test_summary_counts_and_paper_form(planted):
    _, res = planted
    c = res.summary["categories_per_tag"]
    assert c["NOUN"]["pos"] == 1 and c["NOUN"]["token"] == 1 and c["NUM"]["token"] == 1
    paper = res.summary["paper_specificity"]["per_tag"]
    assert paper["NOUN"]["n_units"] == 2  # the noun unit and the noun-list unit "only fire on nouns"
    assert paper["NUM"]["n_units"] == 0  # one word type is not ">= 10 word types"
    assert {p["name"] for p in res.paper if p["passes"]} == {"noun", "noun-list"}
    # both "only fire on nouns"; only the slot-reading unit tells "play" the noun from "play" the verb
    assert {p["name"] for p in res.paper if p.get("beyond_identity")} == {"noun"}
    assert paper["NOUN"]["n_beyond_identity"] == 1


def test_ambiguous_test_is_untestable_without_support():
    ua = planted_units()
    res = classify_units(ua, IdentityConfig(n_boot=100, ambiguous_min_stories=10_000))
    r = _row(res, NOUN_UNIT, "NOUN")
    assert r["category"] == "untestable" and "no support: ambiguous words" in r["reasons"]
    assert _row(res, LIST_UNIT, "NOUN")["category"] == "untestable"


def test_exact_metrics_match_sklearn():
    ua = planted_units(n_stories=60)
    a, n_pos, _ = auroc_matrix(ua.acts, ua.tags, ua.n_tags)
    for u in (NOUN_UNIT, ONE_UNIT, IDENT_UNITS[0]):
        for t in range(ua.n_tags):
            assert a[u, t] == pytest.approx(roc_auc_score(ua.tags == t, ua.acts[:, u]), abs=1e-10)
    top = top_tokens(ua.acts, 10)
    assert (ua.acts[top[:, 0], np.arange(ua.n_units)] == ua.acts.max(0)).all()
    spec = specificity(top, ua.tags, ua.words, ua.n_tags)
    assert np.allclose(spec["precision"].sum(1), 1.0)
    res = classify_units(ua, IdentityConfig(n_boot=50))
    r = _row(res, NOUN_UNIT, "NOUN")
    held = ~ua.selection
    y = ua.tags[held] == ua.tag_names.index("NOUN")
    assert r["ap"] == pytest.approx(average_precision_score(y, ua.acts[held, NOUN_UNIT]))
    assert r["ap_lift"] == pytest.approx(r["ap"] / y.mean())


def test_auroc_matrix_ties_subsets_and_units_match_sklearn():
    rng = np.random.default_rng(0)
    n, n_units, n_tags = 600, 12, 4
    acts = rng.normal(size=(n, n_units)).astype(np.float32)
    acts[:, :4] = np.round(acts[:, :4], 1)  # many ties
    acts[::3, 4:8] = 0.0
    acts[1::3, 4:8] = -0.0  # signed zeros are ties, as in rankdata
    tags = rng.integers(0, n_tags, n)
    a, _, _ = auroc_matrix(acts, tags, n_tags, max_elems=1000)  # several chunks
    want = np.array([[roc_auc_score(tags == t, acts[:, u]) for t in range(n_tags)] for u in range(n_units)])
    np.testing.assert_allclose(a, want, atol=1e-12)
    rows, units = rng.random(n) < 0.4, np.array([1, 5, 6, 11])
    for r in (rows, np.flatnonzero(rows), slice(50, 400)):
        sub, _, _ = auroc_matrix(acts, tags[r], n_tags, rows=r, units=units)
        want_sub = np.array([[roc_auc_score(tags[r] == t, acts[r, u]) for t in range(n_tags)] for u in units])
        np.testing.assert_allclose(sub[units], want_sub, atol=1e-12)
        assert np.isnan(np.delete(sub, units, 0)).all()
    top = top_tokens(acts, 7, rows=slice(100, 300))
    np.testing.assert_array_equal(top, top_tokens(acts[100:300], 7))
    ap = average_precision(acts, tags, [(u, t) for u in range(n_units) for t in range(n_tags)])
    for (u, t), (v, base) in ap.items():  # ties and signed zeros as scikit-learn has them
        assert v == pytest.approx(average_precision_score(tags == t, acts[:, u]), abs=1e-12) and base == np.mean(tags == t)
    per, union = fold_aurocs(acts, tags, [np.arange(0, n, 2), np.arange(1, 301, 2)], n_tags)
    both = np.r_[np.arange(0, n, 2), np.arange(1, 301, 2)]
    for f, rows_f in enumerate([np.arange(0, n, 2), np.arange(1, 301, 2)]):
        np.testing.assert_allclose(per[f], auroc_matrix(acts, tags[rows_f], n_tags, rows=rows_f)[0], atol=1e-12)
    np.testing.assert_allclose(union, auroc_matrix(acts, tags[both], n_tags, rows=both)[0], atol=1e-12)


def test_kept_activations_grow_and_hand_out_views():
    from tinyinterp.analysis.neurons.kept import KeptActivations

    kept = KeptActivations(3, 2)
    for i in range(3):  # 6 rows into room for 3: grows once, keeps the order
        kept.add(np.full((2, 2), i, np.float32), [i, i], [0, 0], [5, 6], [i, i], [1, 2], i < 2)
    ua = kept.unit_activations(tag_names=["A", "B", "C"], word_names=["w"])
    assert len(kept) == 6 and ua.acts.base is not None  # a view of the filled rows, not a copy
    np.testing.assert_array_equal(ua.acts[:, 0], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(ua.selection, [True] * 4 + [False] * 2)
    np.testing.assert_array_equal(kept.positions(), [1, 2] * 3)


def test_config_and_input_validation():
    with pytest.raises(ConfigError, match="auroc_threshold"):
        IdentityConfig(auroc_threshold=0.3)
    ua = planted_units(n_stories=20)
    with pytest.raises(ConfigError, match="split by whole stories"):
        type(ua)(**{**ua.__dict__, "selection": np.arange(len(ua.tags)) % 2 == 0})
