"""Layer-wise POS probes with control-task selectivity, on planted and random representations."""

from __future__ import annotations

import json

import pytest

from tests.support.planted_neurons import make_corpus, random_model, tag_encoding_model
from tests.support.planted_neurons import single_thread  # noqa: F401  (autouse fixture)
from tinyinterp.analysis.probes import ProbeConfig, ProbeResults, probe_layers
from tinyinterp.errors import ConfigError, DataError

CFG = ProbeConfig(max_tokens=1200, max_iter=100)


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(120, seed=5, ambig_rate=0.0)


@pytest.fixture(scope="module")
def planted(corpus):
    return probe_layers(tag_encoding_model(seed=0), corpus, CFG)


def test_tag_encoding_residual_is_probed_accurately_and_selectively(planted):
    df = planted.to_frame().set_index("site")
    assert list(df.index) == ["embed", "mlp0", "resid0"]
    assert (df.accuracy > 0.95).all()
    assert (df.selectivity > 0.15).all()
    assert (df.selectivity == df.accuracy - df.control_accuracy).all()
    assert df.loc["embed", "n_features"] == 32 and df.loc["mlp0", "n_features"] == 32
    s = planted.summary
    assert s["n_train"] <= 1200 and s["n_test"] <= 1200 and s["n_test"] > 500
    assert 0.2 < s["majority_accuracy"] < 0.5  # the task is not trivial


def test_random_embeddings_are_less_selective(planted, corpus):
    rnd = probe_layers(random_model(seed=3), corpus, CFG).to_frame().set_index("site")
    ref = planted.to_frame().set_index("site")
    # word identity alone lets a probe learn both tasks: lower selectivity than a tag-encoding stream
    assert rnd.loc["embed", "selectivity"] < ref.loc["embed", "selectivity"] - 0.05
    assert rnd.loc["embed", "control_accuracy"] > ref.loc["embed", "control_accuracy"]


def test_probe_results_round_trip(planted, tmp_path):
    assert planted.save(tmp_path) == tmp_path
    data = json.loads((tmp_path / "probes.json").read_text())
    assert {"site", "layer", "accuracy", "control_accuracy", "selectivity"} <= set(data["probes"][0])
    back = ProbeResults.load(tmp_path)
    assert back.rows == planted.rows and back.to_frame().equals(planted.to_frame())
    assert ProbeResults.from_json(planted.to_json()).rows == planted.rows
    with pytest.raises(DataError):
        ProbeResults.load(tmp_path / "nowhere")


def test_probe_config_validation(corpus):
    for bad in ({"max_tokens": 0}, {"C": 0.0}, {"sites": ("attn",)}, {"max_iter": -1}):
        with pytest.raises(ConfigError):
            ProbeConfig(**bad)
    with pytest.raises(ConfigError, match="out of range"):
        probe_layers(random_model(), corpus, ProbeConfig(layers=[2], max_tokens=100))
    only = probe_layers(random_model(), corpus, ProbeConfig(sites=("resid",), max_tokens=200, max_iter=50))
    assert [r["site"] for r in only.rows] == ["resid0"]


def test_probes_are_credited_beyond_identity_only_where_they_beat_the_lookup():
    """A context-reading neuron (the noun slot) lets MLP probes beat the token-id lookup on ambiguous words;
    the embedding site, a function of the token (and position), gets no claim."""
    from tests.support.planted_neurons import slot_model

    corpus = make_corpus(160, seed=5, ambig_rate=0.15)
    res = probe_layers(slot_model(), corpus, ProbeConfig(max_tokens=1500, max_iter=100, n_boot=200))
    rows = {r["site"]: r for r in res.rows}
    assert "NOUN" in rows["mlp0"]["beyond_identity"] and rows["mlp0"]["identity"]["NOUN"]["ambiguous_ci"][0] > 0.9
    assert rows["embed"]["beyond_identity"] == []
    s = res.summary
    assert s["lexical_baseline"]["NOUN"]["lookup"]["ambiguous_auroc"] == pytest.approx(0.5)
    assert s["token_lookup_accuracy"] > 0.9 and s["embedding_probe_accuracy"] is not None


def test_sparse_probe_identity_checks_next_to_the_curve():
    from tests.support.planted_neurons import planted_model, slot_model
    from tinyinterp.analysis.probes import sparse_probe_curve

    corpus = make_corpus(160, seed=5, ambig_rate=0.15)
    slot = sparse_probe_curve(slot_model(), corpus, ("NOUN",), ks=(1, 2), max_tokens=1500, identity_ks=(1,), n_boot=200)
    assert slot["NOUN"]["beyond_identity_ks"] == [1] and slot["NOUN"]["identity"][0]["ambiguous_auroc"] > 0.95
    assert slot.headline()["NOUN"]["lookup_auroc"] > 0.95  # the lookup alone is almost perfect held out
    ids = sparse_probe_curve(planted_model(), corpus, ("NOUN",), ks=(1,), max_tokens=1500, identity_ks=(1,), n_boot=200)
    assert ids["NOUN"]["curve"][0]["auroc"] > 0.85 and ids["NOUN"]["beyond_identity_ks"] == []  # a list of noun ids
