"""The columnar tag store: same corpus as the JSON cache, tags once, reads only the rows asked for, refuses a foreign store."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests.support.planted_heads import make_tokenizer
from tests.support.stories import sentence_stories as make_stories
from tinyinterp.analysis.corpus.store import FIELDS
from tinyinterp.analysis.corpus.tag_store import TagStore, corpus_from_store, default_store_path, text_key
from tinyinterp.analysis.corpus.tagging import load_spacy, tag_corpus, tag_into_store
from tinyinterp.errors import DataError


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("store_tok"), make_stories(40))


@pytest.fixture(scope="module")
def texts():
    return make_stories(60, seed=3) + ["   ", "Tom gave Lily a very small zebrafish!"]


def _same_corpus(a, b):
    sa, sb = a.packed(), b.packed()
    assert len(sa) == len(sb) and (sa.lengths == sb.lengths).all()
    for i in range(len(sa)):
        x, y = sa[i], sb[i]
        assert x.text == y.text and (x.tokens == y.tokens).all() and (x.offsets == y.offsets).all()
        assert (x.continuation == y.continuation).all()
        for f in FIELDS:
            assert getattr(x, f) == getattr(y, f), f
    assert a.coverage == pytest.approx(b.coverage) and a.spacy_model == b.spacy_model
    for k in ("n_truncated", "n_skipped_empty", "n_unaligned_tokens", "tokenizer_sha256"):
        assert a.meta[k] == b.meta[k], k


def test_store_gives_the_json_cache_corpus(tok, texts, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYINTERP_CACHE", str(tmp_path / "cache"))
    ref = tag_corpus(texts, tok, 24, progress=False, use_cache=False)  # 24 tokens: some stories are truncated
    store = tag_into_store(texts, tok, tmp_path / "store", progress=False, chunk_stories=25)
    assert store.n_parts == 3 and len(store) == len(texts) - 1  # blank story skipped
    _same_corpus(corpus_from_store(texts, store, 24), ref)
    lean_ref = tag_corpus(texts, tok, None, keep_text=False, progress=False, use_cache=False)
    _same_corpus(corpus_from_store(iter(texts), store, None, keep_text=False), lean_ref)


def test_tagging_once_serves_later_runs(tok, texts, tmp_path, monkeypatch):
    nlp = load_spacy()
    calls = []
    orig = nlp.pipe
    monkeypatch.setattr(nlp, "pipe", lambda xs, **kw: (calls.append(len(xs)), orig(xs, **kw))[1])
    path = tmp_path / "store"
    tag_into_store(texts[:30], tok, path, nlp=nlp, progress=False)
    tag_into_store(texts, tok, path, nlp=nlp, progress=False)  # a later, larger run tags only what is new
    again = tag_into_store(texts, tok, path, nlp=nlp, progress=False)
    assert calls == [30, len(texts) - 1 - 30] and again.n_parts == 2
    # a fresh process (new TagStore object) sees both parts; a share of the stories reads only its rows
    reopened = TagStore(path, again.spacy_model, again.tokenizer_sha256)
    share = texts[1::2]
    part = corpus_from_store(share, reopened, None)
    assert len(part) == sum(1 for t in share if t.strip()) and part.stories.text(0) == share[0]


def test_foreign_store_is_refused_in_one_line(tok, texts, tmp_path):
    store = tag_into_store(texts[:5], tok, tmp_path / "store", progress=False)
    for model, fp in ((store.spacy_model.replace("==", "==0.0."), store.tokenizer_sha256),
                      (store.spacy_model, "f" * 64)):
        with pytest.raises(DataError) as err:
            TagStore(tmp_path / "store", model, fp)
        msg = str(err.value)
        assert "\n" not in msg and "tagged with" in msg and "another tag store folder" in msg
    other_tok = make_tokenizer(tmp_path / "tok2", make_stories(30, seed=9) + ["Zebrafish quietly quarrel."])
    with pytest.raises(DataError, match="tokenizer"):
        tag_into_store(texts[:5], other_tok, tmp_path / "store", progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "thesis.tex").write_text("x")
    with pytest.raises(DataError, match="not a tag store"):
        TagStore(tmp_path / "junk", store.spacy_model, store.tokenizer_sha256)
    assert (tmp_path / "junk" / "thesis.tex").read_text() == "x"


def test_default_path_is_keyed_by_model_and_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYINTERP_CACHE", str(tmp_path))
    a = default_store_path("en_core_web_sm==3.8.0", "a" * 64)
    assert a != default_store_path("en_core_web_sm==3.7.1", "a" * 64) != default_store_path("en_core_web_sm==3.8.0", "b" * 64)
    assert a.parent == tmp_path / "tags"


def test_missing_story_and_stale_temporary_files(tok, texts, tmp_path):
    store = tag_into_store(texts[:4], tok, tmp_path / "store", progress=False)
    with pytest.raises(DataError, match="no tags for a story"):
        corpus_from_store(texts[:6], store, None)
    stale, fresh = tmp_path / "store" / ".part-x.arrow.1.tmp", tmp_path / "store" / ".part-y.arrow.2.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    TagStore(tmp_path / "store", store.spacy_model, store.tokenizer_sha256)
    assert not stale.exists() and fresh.exists()  # a live writer's file is left alone


def test_keys_are_sorted_per_part_and_located(tok, texts, tmp_path):
    store = tag_into_store(texts, tok, tmp_path / "store", progress=False, chunk_stories=16)
    keys = [text_key(t) for t in texts if t.strip()]
    part, row = store.locate(keys + [b"\0" * 32])
    assert (part[:-1] >= 0).all() and part[-1] == -1 and row[-1] == -1
    assert len(set(zip(part[:-1].tolist(), row[:-1].tolist()))) == len(set(keys))
    assert np.all([k in store for k in keys[:3]])


def test_share_labels_in_the_corpus_vocabulary(tok, texts, tmp_path):
    """Each rank's share labelled with the pre-pass vocabulary equals the whole corpus's labels of those stories."""
    from tinyinterp.analysis.corpus.labels import label_corpus
    from tinyinterp.analysis.corpus.prepass import chunked, count_stories, labels_for_share, own_stories

    store = tag_into_store(texts, tok, tmp_path / "store", progress=False)
    whole = corpus_from_store(texts, store, None)
    full = label_corpus(whole)
    shares = [[t for _, t in own_stories(texts, r, 3)] for r in range(3)]
    counts = count_stories(corpus_from_store(c, store, None, keep_text=False) for s in shares for c in chunked(s, 5))
    assert counts.tags == full.tags and counts.words == full.words and (counts.tag_counts() == full.tag_counts).all()
    for r, share in enumerate(shares):
        labels = labels_for_share(corpus_from_store(share, store, None), counts)
        idx = [i for i, _ in own_stories(texts, r, 3)]
        assert labels.tags == full.tags and (labels.tag_counts == full.tag_counts).all()
        for j, i in enumerate(idx):
            assert np.array_equal(labels.tag_ids[j], full.tag_ids[i]) and np.array_equal(labels.word_ids[j], full.word_ids[i])


def test_share_corpus_keeps_corpus_wide_indices(tok, texts, tmp_path):
    """A rank's share placed at its corpus-wide indices: its stories where they belong, the others empty, labels and the
    calibration sample drawn exactly as on the whole corpus, and the packed arrays only the share's."""
    from tinyinterp.analysis.corpus.labels import label_corpus
    from tinyinterp.analysis.corpus.prepass import CorpusShare, analysed_per_story, count_corpus, share_corpus
    from tinyinterp.analysis.corpus.store import BOS_TAG, SPACE_TAG
    from tinyinterp.errors import ConfigError

    store = tag_into_store(texts, tok, tmp_path / "store", progress=False)
    whole = corpus_from_store(texts, store, 64)
    full = label_corpus(whole)
    facts = CorpusShare(count_corpus(whole), whole.lengths(), analysed_per_story(full), False, (BOS_TAG, SPACE_TAG))
    pos = np.arange(1, len(whole), 3)
    stories = [t for t in texts if t.strip()]
    share = share_corpus(corpus_from_store([stories[i] for i in pos], store, 64, keep_text=False), pos, facts)
    assert len(share) == len(whole) and share.packed()._data.tokens.size == whole.lengths()[pos].sum()
    assert (np.nonzero(share.lengths())[0] == pos).all()
    for i in pos[:5]:
        assert (share.story_tokens(int(i)) == whole.story_tokens(int(i))).all()
    labels = facts.labels(share, False, (BOS_TAG, SPACE_TAG))
    assert labels.tags == full.tags and labels.words == full.words and (labels.tag_counts == full.tag_counts).all()
    for i in pos:
        assert np.array_equal(labels.tag_ids[i], full.tag_ids[i]) and np.array_equal(labels.word_ids[i], full.word_ids[i])
    sel = np.arange(len(whole))
    assert np.array_equal(labels.sample_stories(sel, 200, 7), full.sample_stories(sel, 200, 7))
    assert [s.tolist() for s in share.split_indices(3)] == [s.tolist() for s in whole.split_indices(3)]
    with pytest.raises(ConfigError, match="label options"):
        facts.labels(share, True, (BOS_TAG, SPACE_TAG))
