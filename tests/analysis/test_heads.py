"""Head classification: planted-truth heads, serialisation, robustness."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.support.planted_heads import make_tokenizer, noun_token_ids, planted_model
from tests.support.stories import sentence_stories
from tinyinterp.analysis.corpus import TaggedCorpus, tag_corpus
from tinyinterp.analysis.heads import LABELS, HeadConfig, HeadResults, classify_heads, pattern_label
from tinyinterp.errors import ConfigError, DataError

N_CTX = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    stories = sentence_stories(40)
    tok = make_tokenizer(tmp_path_factory.mktemp("heads"), stories)
    corpus = tag_corpus(stories, tok, N_CTX, use_cache=False, progress=False)
    nouns = noun_token_ids(corpus)
    assert len(nouns) >= 5, "the test tokenizer should keep the template nouns whole"
    model = planted_model(tok, nouns, n_ctx=N_CTX)
    return tok, corpus, nouns, model


@pytest.fixture(scope="module")
def results(setup):
    _, corpus, _, model = setup
    return classify_heads(model, corpus, HeadConfig(progress=False))


def test_planted_local_head(results):
    r = results[0, 0]
    assert r.label == "local", r.reason
    assert r.prev_token > 0.95 and r.positional_r2 > 0.95 and r.content_js < 0.01
    assert r.mean_distance == pytest.approx(1.0, abs=0.05) and r.near_mass > 0.99
    assert r.tl_previous_token > 0.9  # TransformerLens agrees
    assert np.argmax(results.profiles[0, 0]) == 1


def test_planted_semantic_head(setup, results):
    tok, _, nouns, _ = setup
    r = results[0, 1]
    assert r.label == "semantic", r.reason
    assert r.top_category == "NOUN" and r.top_categories[0]["category"] == "NOUN"
    noun = r.categories["NOUN"]
    assert noun["lift"] > 3 and noun["p"] <= 0.01 and noun["mass"] > 0.8
    assert r.content_js > 0.3 and r.positional_r2 < 0.3
    assert {t["id"] for t in r.top_tokens} <= set(nouns)
    # a local head gets no significant category lift
    assert all(c["excess"] < 0.01 for c in results[0, 0].top_categories)


def test_planted_sink_head(results):
    r = results[0, 2]
    assert r.label == "sink", r.reason
    assert r.bos_mass > 0.99


def test_labels_are_not_constant(results):
    labels = results.labels()
    assert labels.shape == (1, 4)
    assert [labels[0, h] for h in range(3)] == ["local", "semantic", "sink"]
    assert len(set(labels.ravel())) >= 3
    assert results[0, 3].label == "mixed"  # uniform attention: no rule fires
    assert results.meta["labels"] == {"local": 1, "semantic": 1, "sink": 1, "mixed": 1}


def test_label_rule_is_configurable(results):
    assert pattern_label(results[0, 0], HeadConfig(sink_min_bos=0.0))[0] == "sink"
    semantic = results[0, 1]
    assert pattern_label(semantic, HeadConfig(semantic_min_lift=50.0))[0] == "mixed"


def test_padding_and_batching_do_not_change_scores(setup, results):
    _, corpus, _, model = setup
    one_by_one = classify_heads(model, corpus, HeadConfig(progress=False, batch_tokens=1, detector_stories=0))
    for name in ("positional_r2", "content_js", "bos_mass", "prev_token", "entropy", "mean_distance"):
        a, b = results.score(name), one_by_one.score(name)
        assert np.allclose(a, b, atol=1e-4, equal_nan=True), name
    assert one_by_one.labels().tolist() == results.labels().tolist()


def test_json_and_csv_round_trip(results, tmp_path):
    again = HeadResults.from_json(results.to_json())
    assert again.records == results.records and again.meta == json.loads(results.to_json())["meta"]
    results.save(tmp_path)
    heads = json.loads((tmp_path / "heads.json").read_text())
    assert isinstance(heads, list) and len(heads) == 4
    assert {"layer", "head", "label", "positional_r2", "content_js", "bos_mass", "top_categories"} <= set(heads[0])
    loaded = HeadResults.load(tmp_path)
    assert loaded.records == results.records and loaded.config == results.config
    assert np.allclose(loaded.profiles, results.profiles)
    csv = pd.read_csv(tmp_path / "heads.csv")
    assert csv.shape[0] == 4 and list(csv["label"]) == [r.label for r in results.records]
    assert {"lift_NOUN", "p_NOUN", "positional_r2"} <= set(csv.columns)
    with pytest.raises(DataError, match="heads.json"):
        HeadResults.load(tmp_path / "nowhere")


def test_random_init_model_does_not_crash(setup):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tok, corpus, _, _ = setup
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=48,
                                  d_vocab=len(tok), act_fn="gelu_new", normalization_type="LN", seed=0)
    model = HookedTransformer(cfg, tokenizer=tok)
    small = TaggedCorpus(corpus.stories[:12], corpus.spacy_model, corpus.coverage, dict(corpus.meta))
    res = classify_heads(model, small, HeadConfig(progress=False, n_permutations=199, alpha=0.01,
                                                  calibration_stories=6, detector_stories=2))
    assert len(res) == 8 and set(res.labels().ravel()) <= set(LABELS)
    frame = res.to_frame()
    assert frame.shape[0] == 8 and frame["bos_mass"].between(0, 1).all()
    assert res.meta["n_ctx"] == 48 and res.meta["calibration_stories"] == 6


def test_bad_input(setup):
    tok, corpus, _, model = setup
    with pytest.raises(DataError, match="empty"):
        classify_heads(model, TaggedCorpus([]), HeadConfig(progress=False))
    with pytest.raises(DataError, match="load_corpus"):
        classify_heads(model, ["a story"], HeadConfig(progress=False))
    other = TaggedCorpus(corpus.stories[:2], meta={"tokenizer_sha256": "0" * 64})
    with pytest.raises(DataError, match="different tokenizer"):
        classify_heads(model, other, HeadConfig(progress=False))
    for bad in ({"alpha": 2.0}, {"sink_min_bos": -0.1}, {"n_permutations": 10}, {"rank_categories_by": "p"},
                {"calibration_stories": 0}, {"semantic_min_lift": 0.5}):
        with pytest.raises(ConfigError):
            HeadConfig(**bad)
