"""The identity rules on real hooked models: neuron activations, untrained control, planted token neuron."""

import json

import numpy as np
import pytest

from tests.support.planted_neurons import NOUN, PLANTED, make_corpus, planted_model, random_model, single_thread  # noqa: F401
from tinyinterp.analysis.neurons.identity_report import identity_report, neuron_identity_report
from tinyinterp.analysis.neurons.units import neuron_activations
from tinyinterp.analysis.neurons.identity import IdentityConfig

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


def test_planted_id_list_neuron_is_token_and_untrained_model_has_no_pos_row(corpus):
    rep = neuron_identity_report(planted_model(), corpus, CFG, dense_probe=False, sparse_ks=())
    row = [r for r in rep["rows"] if r["unit"] == PLANTED and r["tag"] == "NOUN"][0]
    # it fires on a list of noun ids and never on the ambiguous words in a noun slot: identity
    assert row["replicated"] and row["category"] == "token" and "ambiguous words" in row["reasons"]
    assert not any(r["category"] == "pos" for r in rep["rows"])
    ctrl = neuron_identity_report(random_model(seed=3), corpus, CFG, dense_probe=False, sparse_ks=())
    assert not any(r["category"] == "pos" for r in ctrl["rows"])
    json.dumps(rep)  # JSON-ready


def test_report_joins_the_lexical_baseline_onto_rows():
    from tests.support.planted_units import embedding_table, planted_units

    ua = planted_units(n_stories=200)
    rep = identity_report(ua, embedding_table(ua), CFG, dense_probe=False, sparse_ks=(1,))
    r = [r for r in rep["rows"] if r["category"] == "pos"][0]
    assert r["lookup_ambiguous_auroc"] == pytest.approx(0.5) and "embedding_unseen_auroc" in r
    claimed = rep["summary"]["beyond_identity_tags"]["sparse_k1"]
    assert "NOUN" in claimed and "PUNCT" not in claimed  # PUNCT: lookup-perfect, no ambiguous word, few types
    assert rep["summary"]["lexical_baseline"]["NOUN"]["lookup"]["unseen_auroc"] == pytest.approx(0.5)
