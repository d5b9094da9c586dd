"""Ablation chosen on the selection half, run on the held-out half, against matched random sets."""

import numpy as np
import pytest

from tests.support.planted_neurons import PLANTED, make_corpus, planted_model, single_thread  # noqa: F401
from tinyinterp.analysis.neurons.matched_ablation import AblationConfig, ablation_table, matched_random_sets, neuron_units
from tinyinterp.analysis.neurons.units import neuron_activations


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


def test_planted_noun_neuron_ablation_hits_its_target_not_other_positions():
    corpus = make_corpus(120, seed=2)
    model = planted_model()
    ua = neuron_activations(model, corpus)
    refs, norms, group = neuron_units(model, ua)
    rows = ablation_table(model, corpus, ua, refs, norms, group,
                          AblationConfig(n_units=1, n_random=5, n_boot=200, max_stories=None, tags=("NOUN", "DET")))
    noun = {r["tag"]: r for r in rows}["NOUN"]
    assert noun["units"] == [f"L0.N{PLANTED}"]  # chosen on the selection half
    assert noun["delta_target_ci"][0] > 0.05  # its successors (VERB/PUNCT) lose their boost
    # mean-ablation also moves other positions (the mean activation leaks the boost there), but less
    assert noun["ratio"] > 1.2 and noun["ratio_ci"][0] > 1.0
    assert noun["p_random"] == pytest.approx(1 / 6)  # beats every matched random set
    assert max(noun["random_delta_target"]) < 0.2 * noun["delta_target"]
    det = {r["tag"]: r for r in rows}["DET"]
    assert f"L0.N{PLANTED}" not in det["units"]  # every tag gets its own complete top set
