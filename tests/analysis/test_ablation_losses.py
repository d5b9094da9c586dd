"""Many ablation sets from one cached clean pass equal one forward pass per set; p-values that can pass BH."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tests.support.planted_neurons import PLANTED, make_corpus, planted_model, random_model, single_thread  # noqa: F401
from tinyinterp.analysis.neurons.ablation_losses import set_losses
from tinyinterp.analysis.neurons.matched_ablation import (AblationConfig, ablation_table, correct_rows, neuron_ablation,
                                                          selection_stats)


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(60, seed=3)


def _two_layer(norm: str):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    return HookedTransformer(HookedTransformerConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=24, n_ctx=64,
                                                     d_vocab=64, act_fn="gelu_new", normalization_type=norm,
                                                     seed=1)).eval()


def _compare(model, corpus, sets, **kw):
    means = {f"blocks.{x}.mlp.hook_post": torch.randn(model.cfg.d_mlp, generator=torch.Generator().manual_seed(x))
             for x in range(model.cfg.n_layers)}
    stories = np.arange(len(corpus.stories))
    fast = set_losses(model, corpus, stories, sets, means, 512, method="auto", **kw)
    ref = set_losses(model, corpus, stories, sets, means, 512, method="forward", **kw)
    assert len(fast) == len(ref) > 1  # several batches
    for (i, v, c, a), (j, w, d, b) in zip(fast, ref):
        assert np.array_equal(i, j) and np.array_equal(v, w)
        np.testing.assert_allclose(c, d, atol=1e-6)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x[v], y[v], rtol=1e-4, atol=1e-4)
    return fast


@pytest.mark.parametrize("norm", ["LN", "LNPre", None])
def test_cached_sets_equal_one_forward_per_set(corpus, norm):
    model = _two_layer(norm)
    h0, h1 = "blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"
    sets = [[(h0, 1), (h0, 5)],  # first layer: continue from layer 1
            [(h1, 2), (h1, 7), (h1, 9)],  # last layer: final LayerNorm + unembed done analytically
            [(h1, 3), (h0, 4)],  # both layers: update at layer 0, hook at layer 1
            []]  # nothing ablated = clean
    fast = _compare(model, corpus, sets)
    _, valid, clean, ablated = fast[0]
    moved = [np.abs(ablated[k] - clean)[valid].max() for k in range(3)]
    assert min(moved) > 1e-3  # the ablations do change the loss (the comparison is not trivially equal)


def test_planted_model_table_is_the_same_either_way(corpus):
    model = planted_model()
    stats = selection_stats(model, corpus)
    stats.auroc = np.random.default_rng(0).random((len(stats.mean), len(stats.tag_names)))
    cfg = dict(n_units=2, n_random=6, n_boot=50, max_stories=None, tags=("NOUN", "VERB"))
    a = ablation_table(model, corpus, stats, AblationConfig(**cfg))
    b = ablation_table(model, corpus, stats, AblationConfig(**cfg, method="forward"))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x["random_delta_target"], y["random_delta_target"], atol=1e-5)
        assert x["delta_target"] == pytest.approx(y["delta_target"], abs=1e-5) and x["p_random"] == y["p_random"]


def test_sae_splice_sets_equal_one_forward_per_set():
    from tests.support.planted_features import HOOK, planted_model as slot_model, planted_sae, slot_corpus
    from tinyinterp.analysis.features.units import splice_ablation_hook, splice_low_rank

    model = slot_model()
    sae = planted_sae(model)
    corpus = slot_corpus(40)
    means = {HOOK: torch.rand(sae.cfg.d_sae, generator=torch.Generator().manual_seed(0))}
    sets = [[(HOOK, 0)], [(HOOK, 1), (HOOK, 3)]]
    stories = np.arange(len(corpus.stories))
    kw = dict(make_hook=splice_ablation_hook(sae), low_rank=splice_low_rank(model, sae))
    fast = set_losses(model, corpus, stories, sets, means, 256, method="auto", **kw)
    ref = set_losses(model, corpus, stories, sets, means, 256, method="forward", **kw)
    for (_, v, c, a), (_, _, _, b) in zip(fast, ref):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x[v], y[v], rtol=1e-4, atol=1e-4)
        assert np.abs(a[0] - c)[v].max() > 1e-3


def test_default_sets_let_a_lone_strong_tag_pass_bh(caplog):
    cfg = AblationConfig()
    assert [cfg.random_sets(m) for m in (1, 3, 5)] == [40, 120, 200]
    for m in (1, 3, 5, 8):
        n = cfg.random_sets(m)
        assert m / (n + 1) < cfg.alpha / 2  # the smallest p survives BH even with one random set reaching it
        rows = [{"p_random": 1 / (n + 1), "p_random_ratio": 1.0}] + [{"p_random": 0.6, "p_random_ratio": 1.0}] * (m - 1)
        out = correct_rows(rows, cfg.alpha)
        assert out[0]["significant"] and not any(r["significant"] for r in out[1:])
        assert out[0]["q_random"] == pytest.approx(m / (n + 1))
    with caplog.at_level(logging.WARNING):
        assert AblationConfig(n_random=20).random_sets(3) == 20
    assert "cannot pass BH" in caplog.text  # 1/21 * 3 > 0.05


def test_planted_neuron_is_significant_with_default_sets_and_bh():
    corpus = make_corpus(80, seed=4)
    model = planted_model()
    stats = selection_stats(model, corpus)
    rng = np.random.default_rng(1)
    stats.auroc = rng.random((len(stats.mean), len(stats.tag_names))) * 0.5
    stats.auroc[PLANTED, stats.tag_names.index("NOUN")] = 1.0  # the planted neuron is NOUN's chosen set
    rows = {r["tag"]: r for r in ablation_table(model, corpus, stats, AblationConfig(n_units=1, n_boot=50, max_stories=None,
                                                                                     tags=("NOUN", "VERB", "DET")))}
    noun = rows["NOUN"]
    assert noun["n_random"] == 120 and noun["units"] == [f"L0.N{PLANTED}"]
    assert noun["p_random"] == pytest.approx(1 / 121) and noun["q_random"] < 0.05 and noun["significant"]
    assert noun["correction"].startswith("Benjamini-Hochberg over the 3")


def test_p_values_of_a_set_like_the_random_ones_are_roughly_uniform(corpus):
    # an untrained model; the "chosen" neuron is a random one: exchangeable with its matched stand-ins
    model = random_model(seed=5, d_mlp=48)
    stats = selection_stats(model, corpus)
    ps = []
    for seed in range(40):
        neuron = int(np.random.default_rng(100 + seed).integers(48))
        row = neuron_ablation(model, corpus, [(0, neuron)], "NOUN",
                              AblationConfig(n_random=19, n_boot=20, max_stories=30, seed=seed), stats=stats)
        ps.append(row["p_random"])
    ps = np.array(ps)
    assert 0.3 < ps.mean() < 0.7  # uniform on {1/20, ..., 1}: mean 0.525
    assert (ps <= 0.05).mean() <= 0.15 and (ps <= 0.5).mean() < 0.75
