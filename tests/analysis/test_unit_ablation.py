"""Ablation chosen on the selection half, run on the held-out half, against matched random sets."""

import numpy as np
import pytest

from tests.support.planted_neurons import PLANTED, make_corpus, planted_model, single_thread  # noqa: F401
from tinyinterp.analysis.neurons import NeuronConfig, find_pos_neurons
from tinyinterp.analysis.neurons.job import neuron_activations
from tinyinterp.analysis.neurons.matched_ablation import (AblationConfig, AblationResults, SelectionStats, ablation_table,
                                                          matched_random_sets, neuron_ablation, selection_stats)
from tinyinterp.errors import ConfigError, DataError


def test_matched_random_sets_stay_in_group_and_near_the_chosen_units():
    rng = np.random.default_rng(0)
    var = np.exp(rng.normal(size=200))
    norm = np.exp(rng.normal(size=200))
    group = np.repeat([0, 1], 100)
    chosen = np.array([3, 150])
    sets = matched_random_sets(chosen, var, norm, group, 20, 5, rng)
    for s in sets:
        assert group[s[0]] == 0 and group[s[1]] == 1 and not set(s) & set(chosen)
    # matched: stand-ins are closer in log variance than random units are
    gap = np.mean([abs(np.log(var[s[0]]) - np.log(var[3])) for s in sets])
    assert gap < np.mean(np.abs(np.log(var[:100]) - np.log(var[3])))


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(120, seed=2)


@pytest.fixture(scope="module")
def model():
    return planted_model()


def test_planted_noun_neuron_ablation_hits_its_target_not_other_positions(model, corpus):
    # what the pipeline does: rank and match on the neuron analysis' selection-half statistics
    res = find_pos_neurons(model, corpus, NeuronConfig(untrained_control=False, n_examples=0))
    assert set(res.selection.held_out.tolist()) == set(corpus.split_indices(0)[1].tolist())
    rows = ablation_table(model, corpus, res.selection,
                          AblationConfig(n_units=1, n_random=5, n_boot=200, max_stories=None, tags=("NOUN", "DET")))
    noun = {r["tag"]: r for r in rows}["NOUN"]
    assert noun["units"] == [f"L0.N{PLANTED}"] and noun["neurons"] == [[0, PLANTED]]  # chosen on the selection half
    assert noun["delta_target_ci"][0] > 0.05  # its successors (VERB/PUNCT) lose their boost
    # mean-ablation also moves other positions (the mean activation leaks the boost there), but less
    assert noun["ratio"] > 1.2 and noun["ratio_ci"][0] > 1.0
    assert noun["p_random"] == pytest.approx(1 / 6)  # beats every matched random set
    assert max(noun["random_delta_target"]) < 0.2 * noun["delta_target"]
    det = {r["tag"]: r for r in rows}["DET"]
    assert f"L0.N{PLANTED}" not in det["units"]  # every tag gets its own complete top set


def test_selection_stats_agree_across_the_three_sources(model, corpus):
    res = find_pos_neurons(model, corpus, NeuronConfig(untrained_control=False, n_examples=0))
    ua = neuron_activations(model, corpus)
    a, b, c = res.selection, SelectionStats.from_units(ua), selection_stats(model, corpus)
    for x in (b, c):
        np.testing.assert_allclose(x.mean, a.mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(x.variance, a.variance, rtol=1e-3, atol=1e-5)
    assert np.nanmax(np.abs(b.auroc - a.auroc)) < 0.02  # exact vs binned


def test_one_chosen_neuron_against_matched_random_neurons(model, corpus, tmp_path):
    cfg = AblationConfig(n_random=4, n_boot=100, max_stories=None)
    row = neuron_ablation(model, corpus, [(0, PLANTED)], "NOUN", cfg)
    other = neuron_ablation(model, corpus, [(0, 3)], "NOUN", cfg)
    assert row["delta_target"] > 0.3 and row["p_random"] == pytest.approx(1 / 5)
    assert abs(other["delta_target"]) < 0.05
    AblationResults([row, other]).save(tmp_path)
    assert AblationResults.load(tmp_path).rows[0]["units"] == [f"L0.N{PLANTED}"]
    with pytest.raises(ConfigError):
        neuron_ablation(model, corpus, [(0, 999)], "NOUN", cfg)
    with pytest.raises(DataError, match="INTJ"):
        neuron_ablation(model, corpus, [(0, PLANTED)], "INTJ", cfg)
