"""Planted-truth tests for find_pos_neurons: the identity categories are the decision (exact and streaming),
the untrained control, examples, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from tests.support.planted_neurons import NOUN, PLANTED, SLOT, SUCCESSORS, make_corpus, random_model, slot_model
from tests.support.planted_neurons import single_thread  # noqa: F401  (autouse fixture)
from tinyinterp.analysis.neurons import IdentityConfig, NeuronConfig, NeuronResults, find_pos_neurons, untrained_copy
from tinyinterp.analysis.neurons import max_activating_examples
from tinyinterp.analysis.neurons.job import neuron_activations
from tinyinterp.errors import ConfigError, DataError

IDC = IdentityConfig(n_boot=200)


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(240, seed=0, ambig_rate=0.15)


@pytest.fixture(scope="module")
def planted():
    return slot_model(seed=0)


@pytest.fixture(scope="module")
def res(planted, corpus):
    return find_pos_neurons(planted, corpus, NeuronConfig(identity=IDC, control_max_stories=120))


@pytest.fixture(scope="module")
def streamed(planted, corpus):
    return find_pos_neurons(planted, corpus, NeuronConfig(identity=IDC, in_memory=False, control_max_stories=120))


def _row(res: NeuronResults, neuron: int, tag: str) -> pd.Series | None:
    df = res.to_frame()
    hit = df[(df.layer == 0) & (df.neuron == neuron) & (df.tag == tag)]
    return None if hit.empty else hit.iloc[0]


def test_slot_neuron_is_pos_and_passes_the_ambiguous_word_test(res):
    row = _row(res, SLOT, "NOUN")  # fires on "play" as a noun, not on "play" as a verb
    assert row.category == "pos" and row.reasons == [] and row.exact
    assert row.auroc > 0.97 and row.auroc_ci[0] > 0.9 and row.q_value < 0.05
    assert row.ambiguous_ci[0] > 0.5 and row.ambiguous_q < 0.05 and row.ambiguous_n_pos >= 20
    assert row.unseen_auroc > 0.9 and row.unseen_ci[0] > 0.5 and row.n_top_types >= 5
    assert row.top_k_precision == 1.0 and row.ap_lift > 2  # specificity next to sensitivity
    assert row.lookup_ambiguous_auroc == pytest.approx(0.5)  # a lookup cannot do this
    assert res.summary["categories_per_tag"]["NOUN"]["pos"] == 1 and res.summary["n_pos_neurons"] == 1


def test_noun_id_list_neuron_is_token_not_pos(res):
    row = _row(res, PLANTED, "NOUN")  # fires on a list of noun ids: high AUROC, no within-identity signal
    assert row.replicated and row.auroc > 0.9
    assert row.category == "token" and "ambiguous words" in row.reasons
    assert abs(row.ambiguous_auroc - 0.5) < 0.1
    assert set(row.promoted[:5]) <= set(SUCCESSORS)  # logit effects joined on


def test_lookup_perfect_tags_and_the_untrained_control_have_no_pos_row(res):
    df = res.to_frame()
    assert set(df[df.category == "pos"].neuron) == {SLOT}
    assert not ((df.tag.isin(["PUNCT", "DET", "ADJ"])) & (df.category == "pos")).any()
    ctrl = res.summary["untrained_control"]
    assert ctrl["n_pos_neurons"] == 0 and sum(ctrl["pos_per_tag"].values()) == 0 and ctrl["mode"] == "exact"
    assert res.control is not None and res.control.category("pos").empty


def test_random_init_models_have_no_pos_row(corpus):
    for seed in (1, 2):
        out = find_pos_neurons(random_model(seed, d_mlp=64), corpus,
                               NeuronConfig(identity=IDC, untrained_control=False, n_examples=0))
        assert out.summary["n_pos_neurons"] == 0 and out.summary["n_neurons"] == 64


def test_every_tag_a_neuron_is_tested_on_has_a_row_and_counts_add_up(res):
    df = res.to_frame()
    c = res.summary["categories_per_tag"]
    assert sum(sum(v.values()) for v in c.values()) == len(df) == res.summary["n_candidates"]
    for tag, counts in c.items():
        for cat in ("pos", "token", "untestable"):
            assert counts[cat] == int(((df.tag == tag) & (df.category == cat)).sum())
    assert (df.groupby(["neuron", "tag"]).size() == 1).all()  # one row per neuron x tag
    assert {"lookup", "embedding"} <= set(res.summary["lexical_baseline"]["NOUN"])
    assert res.summary["paper_specificity"]["per_tag"]["NOUN"]["n_units"] >= 1
    assert {"identity_rules_s", "lexical_baselines_s"} <= set(res.timings)


def test_streaming_run_says_what_is_untestable_and_never_claims_pos(streamed, res, planted, corpus):
    df = streamed.to_frame()
    assert streamed.summary["mode"] == "streaming" and not (df.category == "pos").any()
    slot = _row(streamed, SLOT, "NOUN")
    assert slot.category == "untestable" and "streaming" in slot.reasons[0] and not slot.exact
    assert "story bootstrap" in streamed.summary["untestable_why"]
    assert streamed.summary["untrained_control"]["mode"] == "streaming"
    # AP from the exact top tail matches scikit-learn on the held-out tokens
    ua = neuron_activations(planted, corpus)
    held = ~ua.selection
    y = ua.tags[held] == ua.tag_names.index("NOUN")
    exact = average_precision_score(y, ua.acts[held, SLOT])
    assert slot.ap == pytest.approx(exact, abs=0.01) and _row(res, SLOT, "NOUN").ap == pytest.approx(exact, abs=1e-9)


def test_examples_and_max_activating(res, planted, corpus):
    ex = res.examples[f"0.{SLOT}"]
    assert len(ex) == 5 and all(e["tag"] == "NOUN" for e in ex)
    for e in ex:
        assert e["acts"][e["center"]] == pytest.approx(e["activation"], abs=1e-4)
        assert corpus.stories[e["story"]].tokens[e["pos"]] == e["tokens"][e["center"]]
    direct = max_activating_examples(planted, corpus, 0, PLANTED, k=3, window=2)
    assert all(e["tag"] == "NOUN" and corpus.stories[e["story"]].tokens[e["pos"]] in NOUN for e in direct)


def test_untrained_copy_is_deterministic_and_fresh(planted):
    a, b = untrained_copy(planted, 7), untrained_copy(planted, 7)
    assert np.allclose(a.W_E.detach(), b.W_E.detach())
    assert not np.allclose(a.W_E.detach(), planted.W_E.detach())


def test_save_load_json_csv_round_trip(res, tmp_path):
    res.save(tmp_path)
    rows = json.loads((tmp_path / "neurons.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert isinstance(rows, list) and len(rows) == len(res.rows)
    need = {"layer", "neuron", "tag", "category", "reasons", "auroc", "auroc_ci", "q_value", "top_k_precision", "ap_lift",
            "unseen_auroc", "ambiguous_auroc", "ambiguous_ci", "lookup_auroc"}
    assert need <= set(rows[0])
    assert len(pd.read_csv(tmp_path / "neurons.csv")) == len(rows)
    back = NeuronResults.load(tmp_path)
    pd.testing.assert_frame_equal(back.to_frame(), res.to_frame())
    assert back.counts() == res.counts() and back.control is not None
    assert back.examples == json.loads(json.dumps(res.examples))
    pd.testing.assert_frame_equal(NeuronResults.from_json(res.to_json()).to_frame(), res.to_frame())
    assert not back.tag_table().empty and len(back.display_frame()) == len(rows)


def test_multi_layer_continuations_and_control_subset():
    from transformer_lens import HookedTransformer

    from tests.support.planted_neurons import tiny_config

    corpus = make_corpus(80, seed=4)
    cfg = tiny_config(d_mlp=16)
    cfg.n_layers = 2
    model = HookedTransformer(cfg).eval()
    out = find_pos_neurons(model, corpus, NeuronConfig(layers=[1], include_continuations=True, control_max_stories=40,
                                                       n_examples=2, max_example_neurons=3, identity=IDC))
    assert out.summary["untrained_control"]["n_stories"] == 40 and out.control.summary["layers"] == [1]
    assert set(out.to_frame().get("layer", pd.Series([1]))) <= {1} and out.summary["n_neurons"] == 16
    n_suffix = sum(int(s.continuation.sum()) for s in corpus.stories)
    plain = NeuronConfig(layers=[1], untrained_control=False, n_examples=0, identity=IDC)
    base = find_pos_neurons(model, corpus, plain).summary
    assert out.summary["n_tokens_select"] + out.summary["n_tokens_held_out"] == (
        base["n_tokens_select"] + base["n_tokens_held_out"] + n_suffix)


def test_bad_configs_and_inputs(planted, corpus):
    for bad in ({"n_bins": 1}, {"tail": 0}, {"n_examples": 60}, {"control_max_stories": 2}, {"identity": {"fdr": 0.1}}):
        with pytest.raises(ConfigError):
            NeuronConfig(**bad)
    with pytest.raises(ConfigError):
        IdentityConfig(fdr=0.0)
    with pytest.raises(ConfigError, match="out of range"):
        find_pos_neurons(planted, corpus, NeuronConfig(layers=[3]))
    from tinyinterp.analysis.corpus import TaggedCorpus

    with pytest.raises(DataError, match="at least 4"):
        find_pos_neurons(planted, TaggedCorpus(corpus.stories[:3]))


def test_a_corpus_too_big_for_memory_streams_instead(planted, corpus):
    out = find_pos_neurons(planted, corpus, NeuronConfig(identity=IDC, untrained_control=False, n_examples=0,
                                                         max_memory_gb=1e-6))
    assert out.summary["mode"] == "streaming" and not (out.to_frame().category == "pos").any()
