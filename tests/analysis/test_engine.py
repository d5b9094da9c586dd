"""Streaming activations, corpus labels and the top-k buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.planted_neurons import SUFFIX, make_corpus, random_model
from tests.support.planted_neurons import single_thread  # noqa: F401  (autouse fixture)
from tinyinterp.analysis.corpus import label_corpus
from tinyinterp.analysis.engine import mlp_hook, plan_batches, resid_hook, run_pass, run_text, stream_activations
from tinyinterp.analysis.neurons import TopKBuffer
from tinyinterp.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(40, seed=1)


@pytest.fixture(scope="module")
def model():
    return random_model(seed=2)


def test_plan_batches_respects_budget_and_covers_every_story():
    lengths = np.array([5, 30, 12, 7, 30, 2, 9])
    batches = plan_batches(lengths, batch_tokens=40)
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))
    for b in batches:
        assert len(b) * lengths[b].max() <= 40 or len(b) == 1
    sub = plan_batches(lengths, batch_tokens=40, indices=[1, 3])
    assert sorted(np.concatenate(sub).tolist()) == [1, 3]


def test_stream_matches_unbatched_forward(corpus, model):
    hooks = [mlp_hook(0), resid_hook(-1), resid_hook(0)]
    seen = []
    for bt in stream_activations(model, corpus, hooks, batch_tokens=128):
        assert set(bt.acts) == set(hooks)
        assert bt.mask.shape == bt.tokens.shape == bt.acts[mlp_hook(0)].shape[:2]
        for row, i in enumerate(bt.stories.tolist()):
            n = len(corpus.stories[i])
            assert int(bt.mask[row].sum()) == n and not bt.mask[row, n:].any()
            seen.append(i)
            if i % 4:  # compare a sample of stories with an unbatched forward
                continue
            _, ref = model.run_with_cache(torch.as_tensor(corpus.stories[i].tokens)[None])
            for h in hooks:
                torch.testing.assert_close(bt.acts[h][row, :n], ref[h][0], atol=1e-4, rtol=1e-4)
    assert sorted(seen) == list(range(len(corpus)))


def test_stream_truncates_to_context_and_rejects_bad_input(corpus, model):
    from tinyinterp.analysis.corpus import TaggedCorpus

    long = corpus.stories[0]
    long = type(long)(**{**long.__dict__, "tokens": np.tile(long.tokens, 10)})  # longer than n_ctx=64
    bt = next(iter(stream_activations(model, TaggedCorpus([long]), [mlp_hook(0)])))
    assert bt.mask.shape[1] == model.cfg.n_ctx
    with pytest.raises(ConfigError, match="unknown hook"):
        next(iter(stream_activations(model, corpus, ["blocks.7.mlp.hook_post"])))
    bad = type(long)(**{**corpus.stories[1].__dict__, "tokens": corpus.stories[1].tokens + 1000})
    with pytest.raises(DataError, match="token ids outside"):
        next(iter(stream_activations(model, TaggedCorpus([bad]), [mlp_hook(0)])))


def test_label_corpus_excludes_bos_and_continuations(corpus):
    labels = label_corpus(corpus)
    assert labels.tags == ["ADJ", "DET", "NOUN", "PUNCT", "VERB"]
    for s, t in zip(corpus.stories, labels.tag_ids):
        assert t[0] == -1  # BOS
        assert (t[s.continuation] == -1).all()
        ok = t >= 0
        assert [labels.tags[i] for i in t[ok]] == [u for u, k in zip(s.upos, ok) if k]
    with_cont = label_corpus(corpus, include_continuations=True)
    n_suffix = sum(int((s.tokens == SUFFIX).sum()) for s in corpus.stories)
    assert n_suffix > 0
    assert sum((t >= 0).sum() for t in with_cont.tag_ids) == sum((t >= 0).sum() for t in labels.tag_ids) + n_suffix
    chunked = label_corpus(corpus, chunk_stories=7)  # same ids whatever the chunking
    assert chunked.tags == labels.tags and chunked.words == labels.words
    assert all((a == b).all() for a, b in zip(chunked.word_ids, labels.word_ids))
    assert (chunked.tag_counts == labels.tag_counts).all()
    multi = np.nonzero((labels.tag_counts > 0).sum(1) >= 2)[0]  # word types carrying two tags: the ambiguous ids
    assert multi.size and all(labels.words[i] in {"w36", "w37", "w38", "w39"} for i in multi)


def test_topk_buffer_matches_global_topk_and_merges():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(500, 6, generator=g)  # [tok, unit]
    story, pos = torch.arange(500) // 50, torch.arange(500) % 50
    a, b, whole = TopKBuffer(6, 7), TopKBuffer(6, 7), TopKBuffer(6, 7)
    for lo in range(0, 250, 60):
        a.update(acts[lo:min(lo + 60, 250)], story[lo:min(lo + 60, 250)], pos[lo:min(lo + 60, 250)])
    b.update(acts[250:], story[250:], pos[250:])
    whole.update(acts, story, pos)
    ref_v, ref_i = acts.T.topk(7, dim=1)
    merged = a.merge(b)
    in_place = TopKBuffer.from_state_dict(a.state_dict())
    in_place.merge_state(b.state_dict())  # what a sharded run does
    for buf in (whole, merged, in_place, TopKBuffer.from_state_dict(merged.state_dict())):
        torch.testing.assert_close(buf.values, ref_v)
        assert torch.equal(buf.story * 50 + buf.pos, ref_i)
    small = TopKBuffer(2, 5)
    small.update(acts[:3, :2], story[:3], pos[:3])  # fewer tokens than k: rest stays empty
    assert (small.story[:, 3:] == -1).all() and torch.isinf(small.values[:, 3:]).all()


def test_run_text_matches_run_with_cache(corpus, model, monkeypatch):
    class Tok:  # the planted vocabulary has no text: ids as words
        def __init__(self):
            self.padding_side = "right"

        def decode(self, ids):
            return f"w{ids[0]}"

    monkeypatch.setattr(model, "tokenizer", Tok())
    monkeypatch.setattr(model, "to_tokens", lambda text: torch.as_tensor([[0, *map(int, text.split())]]))
    strs, acts = run_text(model, "3 4 5 41", [mlp_hook(0), "blocks.0.attn.hook_pattern"])
    _, ref = model.run_with_cache(torch.as_tensor([[0, 3, 4, 5, 41]]))
    assert strs == ["w0", "w3", "w4", "w5", "w41"]
    torch.testing.assert_close(acts[mlp_hook(0)], ref[mlp_hook(0)][0])
    torch.testing.assert_close(acts["blocks.0.attn.hook_pattern"], ref["blocks.0.attn.hook_pattern"][0])
    with pytest.raises(ConfigError, match="unknown hook"):
        run_text(model, "3", ["blocks.9.mlp.hook_post"])


def test_run_pass_feeds_every_consumer_each_story_once(corpus, model):
    class Count:
        hook_names = [mlp_hook(0)]

        def __init__(self):
            self.seen, self.tokens = [], 0

        def batch_hooks(self, batch):
            def hook(act, hook):
                self.seen += batch.stories.tolist()
                self.tokens += int(batch.mask.sum())
            return [(mlp_hook(0), hook)]

    a, b = Count(), Count()
    halves = corpus.split_indices(0)
    total = run_pass(model, corpus, [a, b], halves, batch_tokens=64)
    assert sorted(a.seen) == sorted(b.seen) == list(range(len(corpus)))
    assert a.tokens == b.tokens == total == int(np.minimum(corpus.lengths(), model.cfg.n_ctx).sum())
