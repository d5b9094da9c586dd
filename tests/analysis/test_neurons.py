"""Planted-truth tests for part-of-speech-selective neurons, controls, ablation and serialisation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.support.planted_neurons import PLANTED, SUCCESSORS, make_corpus, planted_model, random_model
from tests.support.planted_neurons import single_thread  # noqa: F401  (autouse fixture)
from tinyinterp.analysis.neurons import ablation_effect, max_activating_examples, untrained_copy
from tinyinterp.analysis.neurons import NeuronConfig, NeuronResults, find_pos_neurons
from tinyinterp.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(240, seed=0, ambig_rate=0.04)


@pytest.fixture(scope="module")
def planted():
    return planted_model(seed=0)


@pytest.fixture(scope="module")
def res(planted, corpus):
    return find_pos_neurons(planted, corpus, NeuronConfig(min_support=10, rows="all"))


def _row(res: NeuronResults, neuron: int, tag: str) -> pd.Series:
    df = res.to_frame()
    return df[(df.layer == 0) & (df.neuron == neuron) & (df.pos == tag)].iloc[0]


def test_planted_noun_neuron_is_selective_on_the_held_out_half(res):
    row = _row(res, PLANTED, "NOUN")
    assert row.held_out and row.selected and row.selective
    assert row.auroc > 0.97 and row.auroc_select > 0.97 and row.ap > 0.9 and row.cohens_d > 2
    assert row.q_value < 0.05 and row.p_value < 1e-10
    assert row.top_k_precision == 1.0
    assert row.n_pos + row.n_neg == res.summary["n_tokens_held_out"]
    # the other tags of the planted neuron are not selective (it is silent on them)
    for tag in ("VERB", "ADJ", "DET", "PUNCT"):
        other = _row(res, PLANTED, tag)
        assert other.auroc < 0.6 and not other.selective
    # it is the only NOUN-selective neuron, and the best one
    assert res.top_neurons("NOUN", 1) == [(0, PLANTED)]
    assert set(zip(res.selective("NOUN").neuron, res.selective("NOUN").pos)) == {(PLANTED, "NOUN")}
    assert res.summary["selective_per_tag"]["NOUN"] == 1
    assert res.summary["n_selective"] <= 2


def test_token_identity_controls_expose_a_word_detector(res):
    row = _row(res, PLANTED, "NOUN")
    # the planted neuron reads token identity: ambiguous words (NOUN in one slot, VERB in another) do not separate
    assert abs(row.ambiguous_auroc - 0.5) < 0.15 and row.n_ambiguous_pos >= 10 and row.n_ambiguous_neg >= 10
    assert 1 <= row.n_word_types_top_k <= 10 and 0.1 <= row.top_k_word_share <= 1.0
    assert row.n_word_types_top_k == 1 or row.top_k_word_share < 1.0


def test_logit_effect_and_examples(res, planted, corpus):
    row = _row(res, PLANTED, "NOUN")
    assert set(row.promoted[:5]) <= set(SUCCESSORS)
    examples = res.examples[f"0.{PLANTED}"]
    assert len(examples) == 5
    for ex in examples:
        assert ex["tag"] == "NOUN"
        assert ex["acts"][ex["center"]] == pytest.approx(ex["activation"], abs=1e-4)
        assert len(ex["acts"]) == len(ex["tokens"]) == len(ex["text"])
        assert corpus.stories[ex["story"]].tokens[ex["pos"]] == ex["tokens"][ex["center"]]
    direct = max_activating_examples(planted, corpus, 0, PLANTED, k=3, window=2)
    assert [e["activation"] for e in direct] == sorted((e["activation"] for e in direct), reverse=True)
    assert all(e["tag"] == "NOUN" and len(e["acts"]) <= 5 for e in direct)


def test_untrained_control_finds_nothing(res):
    ctrl = res.summary["untrained_control"]
    assert ctrl["n_tests"] == res.summary["n_tests"] > 0
    assert ctrl["n_selective_neurons"] == 0 and ctrl["discovery_rate"] <= 0.05
    assert res.control is not None and not res.control.selective().shape[0]


@pytest.mark.parametrize("seed", [1, 2])
def test_random_init_model_has_few_false_discoveries(corpus, seed):
    cfg = NeuronConfig(min_support=10, untrained_control=False, n_examples=0, rows="all")
    out = find_pos_neurons(random_model(seed, d_mlp=64), corpus, cfg)
    assert out.summary["n_tests"] == 64 * 5
    assert out.summary["discovery_rate"] <= 0.05
    assert out.summary["selective_per_tag"]["NOUN"] == 0
    assert out.to_frame().auroc.std() > 0.02  # real, varying statistics, not a constant


def test_untrained_copy_is_deterministic_and_fresh(planted):
    a, b = untrained_copy(planted, 7), untrained_copy(planted, 7)
    assert np.allclose(a.W_E.detach(), b.W_E.detach())
    assert not np.allclose(a.W_E.detach(), planted.W_E.detach())


def test_ablating_the_planted_neuron_raises_loss_after_nouns(planted, corpus):
    r = ablation_effect(planted, corpus, [(0, PLANTED)], "NOUN", n_random=6, max_stories=40)
    assert r.n_positions > 100
    assert r.delta > 0.3 and r.delta > max(r.random_deltas) + 0.2
    assert r.p_value == pytest.approx(1 / 7)
    other = ablation_effect(planted, corpus, [(0, 3)], "NOUN", n_random=1, max_stories=40)
    assert abs(other.delta) < 0.05
    assert json.dumps(r.to_dict())
    with pytest.raises(ConfigError):
        ablation_effect(planted, corpus, [(0, 999)], "NOUN")
    with pytest.raises(DataError, match="no 'INTJ' tokens"):
        ablation_effect(planted, corpus, [(0, PLANTED)], "INTJ", n_random=0, max_stories=5)


def test_random_sets_use_the_target_only_path_with_the_same_loss(planted, corpus):
    # random sets skip the unembedding off the measured positions; their delta must equal the full path's
    import copy

    import torch

    planted = copy.deepcopy(planted)  # a final LayerNorm with a non-trivial affine part, as in trained models
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        planted.ln_final.w.copy_(0.5 + torch.rand(planted.ln_final.w.shape, generator=g))
        planted.ln_final.b.copy_(0.3 * torch.randn(planted.ln_final.b.shape, generator=g))
    r = ablation_effect(planted, corpus, [(0, PLANTED)], "NOUN", n_random=2, seed=5, max_stories=30)
    rng = np.random.default_rng(5)
    pool = np.setdiff1d(np.arange(planted.cfg.d_mlp), [PLANTED])
    for got in r.random_deltas:
        drawn = int(rng.choice(pool, size=1, replace=False)[0])
        full = ablation_effect(planted, corpus, [(0, drawn)], "NOUN", n_random=0, max_stories=30)
        assert got == pytest.approx(full.delta, rel=1e-4, abs=1e-7)
    assert abs(r.random_deltas[0] - r.random_deltas[1]) > 1e-5  # two different sets: the check can tell them apart


def test_save_load_json_csv_round_trip(res, tmp_path):
    res.save(tmp_path)
    text = (tmp_path / "neurons.json").read_text()
    rows = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert isinstance(rows, list) and len(rows) == len(res.rows)
    need = {"layer", "neuron", "pos", "auroc", "ap", "cohens_d", "mean_diff", "p_value", "q_value", "held_out",
            "top_k_precision", "n_word_types_top_k", "ambiguous_auroc"}
    assert need <= set(rows[0]) and all(r["held_out"] is True for r in rows)
    csv = pd.read_csv(tmp_path / "neurons.csv")
    assert need <= set(csv.columns) and len(csv) == len(rows)
    np.testing.assert_allclose(csv.auroc.to_numpy(), res.to_frame().auroc.to_numpy())
    back = NeuronResults.load(tmp_path)
    pd.testing.assert_frame_equal(back.to_frame(), res.to_frame())
    assert back.summary["selective_per_tag"] == res.summary["selective_per_tag"]
    assert back.examples == json.loads(json.dumps(res.examples))
    assert back.control is not None and len(back.control.rows) == len(res.control.rows)
    again = NeuronResults.from_json(res.to_json())
    pd.testing.assert_frame_equal(again.to_frame(), res.to_frame())


def test_candidate_rows_multi_layer_and_continuations():
    from transformer_lens import HookedTransformer

    from tests.support.planted_neurons import tiny_config

    corpus = make_corpus(80, seed=4)
    cfg = tiny_config(d_mlp=16)
    cfg.n_layers = 2
    model = HookedTransformer(cfg).eval()
    out = find_pos_neurons(model, corpus, NeuronConfig(layers=[1], min_support=10, include_continuations=True,
                                                       control_max_stories=40, n_examples=2, max_example_neurons=3))
    assert out.summary["untrained_control"]["n_stories"] == 40 and out.control.summary["layers"] == [1]
    df = out.to_frame()
    assert set(df.layer) == {1} and out.summary["n_neurons"] == 16
    assert df.best_tag.sum() == 16  # one best-tag row per neuron (+ any selected pairs)
    assert len(out.examples) == 3
    n_suffix = sum(int(s.continuation.sum()) for s in corpus.stories)
    plain = NeuronConfig(layers=[1], min_support=10, untrained_control=False, n_examples=0)
    base = find_pos_neurons(model, corpus, plain).summary
    assert out.summary["n_tokens_select"] + out.summary["n_tokens_held_out"] == (
        base["n_tokens_select"] + base["n_tokens_held_out"] + n_suffix)


def test_bad_configs_and_inputs(planted, corpus):
    for bad in ({"fdr": 0.0}, {"auroc_threshold": 0.3}, {"rows": "some"}, {"n_bins": 1}, {"min_support": 0},
                {"n_examples": 50}, {"control_max_stories": 2}):
        with pytest.raises(ConfigError):
            NeuronConfig(**bad)
    with pytest.raises(ConfigError, match="out of range"):
        find_pos_neurons(planted, corpus, NeuronConfig(layers=[3]))
    from tinyinterp.analysis.corpus import TaggedCorpus

    with pytest.raises(DataError, match="at least 4"):
        find_pos_neurons(planted, TaggedCorpus(corpus.stories[:3]))
