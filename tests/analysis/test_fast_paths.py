"""The pieces that make the analysis fast and its memory flat: packed corpus, table binning,
early-stopped forwards, one shared pass for heads and neurons."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.planted_neurons import make_corpus, planted_model
from tests.support.planted_neurons import single_thread  # noqa: F401  (autouse fixture)
from tinyinterp.analysis.corpus import label_corpus
from tinyinterp.analysis.engine import mlp_hook, run_hooked
from tinyinterp.analysis.corpus import StoryStore, TaggedCorpus
from tinyinterp.analysis.heads.scores import story_signs
from tinyinterp.analysis.heads import HeadConfig, classify_heads
from tinyinterp.analysis.neurons.stats import Binner, TagStats, quantile_edges, run_tests
from tinyinterp.analysis.neurons import IdentityConfig, NeuronConfig, find_pos_neurons
from tinyinterp.analysis.pipeline import heads_and_neurons


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(120, seed=3, ambig_rate=0.06)


@pytest.fixture(scope="module")
def model():
    return planted_model(seed=1)


def test_binner_equals_searchsorted_exactly():
    g = torch.Generator().manual_seed(0)
    n_units, n_tok = 6, 5000
    x = torch.randn(n_tok, n_units, generator=g)
    x[:, 1] = torch.nn.functional.gelu(x[:, 1] * 3)  # a pile-up below zero: many edges in few cells
    x[:, 2] = torch.randint(0, 4, (n_tok,), generator=g).float()  # ties: edges repeat
    x[:, 3] = 0.5  # a dead unit: every edge equal
    x[:, 4] = x[:, 4] ** 3 * 100  # heavy tails
    edges = quantile_edges(x[:2000], 32)
    probe = torch.cat([x[2000:], edges[None, :, 5] - 1e-3, edges.T[:2] * 10, torch.full((1, n_units), -1e9)])
    xt = probe.T.contiguous()
    want = torch.searchsorted(edges, xt, right=True)
    for cells in (4, 64, 4096):
        got = Binner(edges, cells=cells)(xt)
        assert torch.equal(got.long(), want), cells
    stride = 100
    got = Binner(edges, cells=16, stride=stride)(xt[2:5], slice(2, 5))  # unit offsets follow the global rows
    assert torch.equal(got.long(), want[2:5] + torch.arange(2, 5)[:, None] * stride)


def test_tagstats_chunked_update_matches_one_pass():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(900, 5, generator=g)
    tags = torch.randint(0, 3, (900,), generator=g)
    edges = quantile_edges(x[:300], 16)
    whole = TagStats(edges, edges[:, 7], 3)
    whole.update(x, tags)
    parts = TagStats(edges, edges[:, 7], 3)
    for lo in range(0, 900, 250):
        for c0 in (0, 3):  # units 0-2 and 3-4 separately
            parts.update_units(x[lo:lo + 250, c0:c0 + 3].T.contiguous(), tags[lo:lo + 250], c0)
    assert torch.equal(whole.hist, parts.hist)
    torch.testing.assert_close(whole.sum, parts.sum, atol=1e-4, rtol=1e-6)
    a, b = run_tests(whole, 5), run_tests(parts, 5)
    np.testing.assert_array_equal(a.auroc, b.auroc)


def test_story_store_round_trip_and_views(corpus):
    store = corpus.packed()
    assert isinstance(store, StoryStore) and len(store) == len(corpus)
    for i in (0, 7, len(corpus) - 1):
        a, b = corpus.stories[i], store[i]
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.offsets, b.offsets)
        assert a.upos == b.upos and a.tag == b.tag and a.ent == b.ent and a.word == b.word and a.text == b.text
        assert np.array_equal(a.continuation, b.continuation)
    packed = TaggedCorpus(store, corpus.spacy_model)
    assert packed.n_tokens == corpus.n_tokens and np.array_equal(packed.lengths(), corpus.lengths())
    halves = packed.split(5)
    for half, idx in zip(halves, packed.split_indices(5)):
        assert [s.tokens.tolist() for s in half.stories] == [corpus.stories[i].tokens.tolist() for i in idx]
    view = store[3:9:2]
    assert len(view) == 3 and view[1].tokens.tolist() == corpus.stories[5].tokens.tolist()
    pad = view.padded("tokens", [0, 2], 80, fill=0)
    assert pad.shape == (2, 80) and pad[1, : len(corpus.stories[7])].tolist() == corpus.stories[7].tokens.tolist()
    assert (pad[1, len(corpus.stories[7]):] == 0).all()
    upos = store.flat("upos", [2])
    assert [store.vocab["upos"][c] for c in upos] == corpus.stories[2].upos
    # labels from the packed corpus equal those from the list
    la, lb = label_corpus(corpus), label_corpus(packed)
    assert la.tags == lb.tags and la.words == lb.words and (la.tag_counts == lb.tag_counts).all()
    # memory: a few bytes per token (plus the text), not Python objects per token
    d = store._data
    nbytes = d.tokens.nbytes + d.offsets.nbytes + d.cont.nbytes + sum(c.nbytes for c in d.codes.values())
    assert nbytes / packed.n_tokens <= 12


def test_run_hooked_stops_after_the_last_needed_hook(model, corpus):
    tokens = torch.as_tensor(corpus.stories[0].tokens)[None]
    fired: list[str] = []
    seen = {}

    def note(act, hook):
        fired.append(hook.name)
        seen[hook.name] = act.clone()

    run_hooked(model, tokens, [(mlp_hook(0), note), ("ln_final.hook_normalized", note)], [mlp_hook(0)])
    assert fired == [mlp_hook(0)]  # the forward stopped before the final LayerNorm
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(seen[mlp_hook(0)], cache[mlp_hook(0)])


def test_story_signs_depend_on_story_not_batch():
    a = story_signs(np.arange(10), 50, seed=3)
    b = story_signs(np.array([7, 2]), 50, seed=3)
    assert set(np.unique(a).tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(a[:, [7, 2]], b)
    assert 0.3 < (a > 0).mean() < 0.7 and not np.array_equal(a, story_signs(np.arange(10), 50, seed=4))


def test_shared_pass_matches_separate_calls(model, corpus):
    hcfg = HeadConfig(progress=False, n_permutations=199, alpha=0.05, calibration_stories=40)
    ncfg = NeuronConfig(identity=IdentityConfig(min_support=10, n_boot=200), untrained_control=False, n_examples=2)
    heads, neurons = classify_heads(model, corpus, hcfg), find_pos_neurons(model, corpus, ncfg)
    h2, n2 = heads_and_neurons(model, corpus, hcfg, ncfg)
    small = classify_heads(model, corpus, HeadConfig(**{**hcfg.__dict__, "batch_tokens": 64}))
    for other in (h2, small):  # same scores and the same sign-flip p-values whatever the batching
        for name in ("positional_r2", "content_js", "bos_mass", "entropy", "mean_distance", "prev_token"):
            np.testing.assert_allclose(heads.score(name), other.score(name), atol=1e-5)
        for r, o in zip(heads.records, other.records):
            assert r.label == o.label
            for c, v in r.categories.items():
                assert v["p"] == o.categories[c]["p"], c
    a, b = neurons.to_frame(), n2.to_frame()
    key = ["layer", "neuron", "tag"]
    m = a.merge(b, on=key, suffixes=("", "_shared"))
    assert len(m) == len(a) == len(b) > 0
    np.testing.assert_allclose(m.auroc, m.auroc_shared, atol=1e-6)
    assert (m.category.fillna("none") == m.category_shared.fillna("none")).all() and (m.category == "token").any()
