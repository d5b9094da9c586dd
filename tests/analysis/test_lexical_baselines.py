"""Lexical baselines: a lookup knows identity and nothing else; probes are credited only beyond it."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from tests.support.planted_units import NOUN_UNIT, embedding_table, planted_units
from tinyinterp.analysis.neurons.baselines import (beyond_identity, embedding_scorer, evaluate_scorer, lexical_baseline,
                                                   lookup_scorer, probe_scorer, sparse_probe_scorer)
from tinyinterp.analysis.neurons.identity import IdentityConfig

CFG = IdentityConfig(n_boot=200)


@pytest.fixture(scope="module")
def ua():
    return planted_units()


@pytest.fixture(scope="module")
def lexical(ua):
    return lexical_baseline(ua, embedding_table(ua), CFG)


def test_lookup_is_near_perfect_held_out_but_blind_within_types_and_on_unseen_types(lexical):
    look = lexical["PUNCT"]["lookup"]
    assert look["auroc"] > 0.99 and look["ap_lift"] > 5  # a lookup-perfect tag
    noun = lexical["NOUN"]["lookup"]
    assert noun["auroc"] > 0.9
    assert noun["ambiguous_auroc"] == pytest.approx(0.5)  # same token id, same score
    assert noun["unseen_auroc_folds"] == pytest.approx([0.5, 0.5])  # unseen ids get the base rate
    # "One" (sentence start, mostly NUM) and "one" share a word type but not a token id: the
    # within-identity strata keep them apart, so the lookup learns nothing there either
    assert lexical["NUM"]["lookup"]["ambiguous_auroc"] == pytest.approx(0.5)
    assert lexical["PRON"]["lookup"]["ambiguous_auroc"] == pytest.approx(0.5)


def test_embedding_generalises_to_unseen_types_but_not_within_types(lexical):
    emb = lexical["NOUN"]["embedding"]
    assert emb["unseen_auroc"] > 0.8  # the planted embedding has a noun direction
    assert emb["ambiguous_auroc"] == pytest.approx(0.5)


def test_dense_and_sparse_probes_are_credited_only_where_units_carry_context(ua, lexical):
    dense = evaluate_scorer(ua, probe_scorer(), CFG)
    flags = beyond_identity(dense, lexical)
    assert flags["NOUN"]["beats_lookup_ambiguous"] and flags["NOUN"]["beyond_identity"]
    assert not flags["PUNCT"]["beats_lookup_ambiguous"]  # PUNCT has no ambiguous words: no claim
    sparse = evaluate_scorer(ua, sparse_probe_scorer(1), CFG)
    assert sparse["NOUN"]["ambiguous_ci"][0] > 0.8  # k=1 picks the planted noun unit
    look_only = evaluate_scorer(ua, lookup_scorer(), CFG)
    assert not any(f["beyond_identity"] for f in beyond_identity(look_only, lexical).values())


def test_sparse_probe_picks_the_planted_unit(ua):
    sel = np.flatnonzero(ua.selection)
    scores = sparse_probe_scorer(1)(ua, sel, np.flatnonzero(~ua.selection))
    noun = ua.tag_names.index("NOUN")
    held = ~ua.selection
    assert spearmanr(scores[:, noun], ua.acts[held, NOUN_UNIT]).statistic > 0.999  # monotone in that unit


def test_embedding_scorer_shapes(ua):
    W = embedding_table(ua)
    s = embedding_scorer(W)(ua, np.flatnonzero(ua.selection), np.arange(10))
    assert s.shape == (10, ua.n_tags) and np.allclose(s.sum(1), 1.0)
