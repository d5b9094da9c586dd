"""The identity rules' inputs on real hooked models, and identity_report for any units (e.g. SAE features).

The decision on MLP neurons (pos / token / untestable through find_pos_neurons) is tested in test_neurons.py."""

import numpy as np
import pytest

from tests.support.planted_neurons import NOUN, PLANTED, make_corpus, planted_model, single_thread  # noqa: F401
from tinyinterp.analysis.neurons.identity import IdentityConfig
from tinyinterp.analysis.neurons.identity_report import identity_report
from tinyinterp.analysis.neurons.job import neuron_activations

CFG = IdentityConfig(n_boot=200)


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(240, seed=1, ambig_rate=0.15)


def test_neuron_activations_line_up_with_the_hooks(corpus):
    model = planted_model()
    ua = neuron_activations(model, corpus)
    assert ua.acts.shape[1] == model.cfg.d_mlp and ua.unit_names[PLANTED] == "L0.N0"
    held = set(corpus.split_indices(0)[1].tolist())
    assert all((s in held) != sel for s, sel in zip(ua.story, ua.selection))
    fires = ua.acts[:, PLANTED] > 1.0
    assert np.array_equal(fires, np.isin(ua.token_ids, NOUN))  # wired: NOUN ids only


def test_report_joins_the_lexical_baseline_onto_rows():
    from tests.support.planted_units import embedding_table, planted_units

    ua = planted_units(n_stories=200)
    rep = identity_report(ua, embedding_table(ua), CFG, dense_probe=False, sparse_ks=(1,))
    r = [r for r in rep["rows"] if r["category"] == "pos"][0]
    assert r["lookup_ambiguous_auroc"] == pytest.approx(0.5) and "embedding_unseen_auroc" in r
    claimed = rep["summary"]["beyond_identity_tags"]["sparse_k1"]
    assert "NOUN" in claimed and "PUNCT" not in claimed  # PUNCT: lookup-perfect, no ambiguous word, few types
    assert rep["summary"]["lexical_baseline"]["NOUN"]["lookup"]["unseen_auroc"] == pytest.approx(0.5)
