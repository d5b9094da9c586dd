"""POS tagging and token alignment on sentences written for these tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.planted_heads import make_tokenizer
from tests.support.stories import sentence_stories
from tinyinterp.analysis.corpus import BOS_TAG, SPACE_TAG, StoryStore, TaggedCorpus
from tinyinterp.analysis.corpus import load_corpus, tag_corpus, tokenizer_fingerprint
from tinyinterp.analysis.corpus.alignment import align_story
from tinyinterp.analysis.corpus.tagging import load_spacy
from tinyinterp.errors import DataError


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("pos"), sentence_stories(40))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYINTERP_CACHE", str(tmp_path / "cache"))


def _by_text(story) -> dict[str, int]:
    """Token text (as written, with its leading space) -> first index."""
    out: dict[str, int] = {}
    for i, (s, e) in enumerate(story.offsets.tolist()):
        out.setdefault(story.text[s:e], i)
    return out


def test_alignment_sentence(tok):
    corpus = tag_corpus(["Lily saw a big red ball."], tok, None, progress=False)
    s = corpus.stories[0]
    assert s.tokens[0] == tok.bos_token_id and s.upos[0] == BOS_TAG and s.tag[0] == BOS_TAG
    assert s.offsets[0].tolist() == [0, 0] and not s.continuation[0]
    idx = _by_text(s)
    assert s.upos[idx["Lily"]] == "PROPN" and s.tag[idx["Lily"]] == "NNP"
    assert s.upos[idx[" big"]] == "ADJ" and s.word[idx[" big"]] == "big"
    assert s.upos[idx[" ball"]] == "NOUN"
    assert s.upos[idx["."]] == "PUNCT"
    assert not s.continuation[1:].any()  # every word here is one token
    # tokens reproduce the text
    assert tok.decode(s.tokens[1:].tolist()) == s.text
    assert len(s.tokens) == len(s.upos) == len(s.tag) == len(s.ent) == len(s.word) == len(s.continuation)


def test_split_word_is_continuation(tok):
    text = "Tom found a zebrafish."
    s = tag_corpus([text], tok, None, progress=False).stories[0]
    pieces = [i for i, w in enumerate(s.word) if w == "zebrafish"]
    assert len(pieces) >= 2, "the tiny tokenizer should split a word it never saw"
    assert not s.continuation[pieces[0]] and s.continuation[pieces[1:]].all()
    assert len({s.upos[i] for i in pieces}) == 1  # every piece carries the word's tag
    assert "".join(text[a:b] for a, b in s.offsets[pieces].tolist()).strip() == "zebrafish"


def test_whitespace_tokens_and_entities(tok):
    s = tag_corpus(["The cat sat.\n\nThen Tom Smith came home."], tok, None, progress=False).stories[0]
    spaces = [i for i, (a, b) in enumerate(s.offsets.tolist()) if i and not s.text[a:b].strip()]
    assert spaces and all(s.upos[i] == SPACE_TAG and s.word[i] == "" for i in spaces)
    smith = [i for i, w in enumerate(s.word) if w == "Smith"]
    assert smith and s.ent[smith[0]] == "PERSON"


def test_coverage_counts_swallowed_words(tok):
    nlp = load_spacy()
    text = 'Hi!"'
    doc = nlp(text)
    assert [t.text for t in doc] == ["Hi", "!", '"']
    rec = align_story(text, doc, [1, 2], [(0, 2), (2, 4)], bos_id=0)  # one token covers both '!' and '"'
    assert rec["widx"] == [-1, 0, 1]
    from tinyinterp.analysis.corpus.alignment import story_from_record

    story, covered, total, _ = story_from_record(text, rec, None)
    assert (covered, total) == (3, 4)  # '"' (1 of 4 characters) starts inside another token's span
    assert story.upos[0] == BOS_TAG and story.word[1:] == ["Hi", "!"] and story.upos[2] == "PUNCT"


def test_cache_hit_identical(tok, tmp_path):
    texts = sentence_stories(6, seed=3)
    first = tag_corpus(texts, tok, 64, progress=False)
    assert first.meta["n_tagged"] == 6 and first.meta["n_cached"] == 0
    files = list((tmp_path / "cache" / "pos").rglob("*.json"))
    assert len(files) == 6 and not list((tmp_path / "cache").rglob("*.pkl"))
    json.loads(files[0].read_text())  # plain JSON
    second = tag_corpus(texts, tok, 64, progress=False)
    assert second.meta["n_cached"] == 6 and second.meta["n_tagged"] == 0
    for a, b in zip(first.stories, second.stories):
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.offsets, b.offsets)
        assert a.upos == b.upos and a.tag == b.tag and a.ent == b.ent and a.word == b.word
        assert np.array_equal(a.continuation, b.continuation) and a.text == b.text
    assert first.coverage == second.coverage and first.spacy_model == second.spacy_model
    # another tokenizer fingerprint is another key: no hit
    other = tag_corpus(texts[:1], tok, 64, progress=False, use_cache=False)
    assert other.meta["n_tagged"] == 1


def test_truncation_and_coverage(tok):
    texts = sentence_stories(5, seed=1)
    corpus = tag_corpus(texts, tok, 12, progress=False)
    assert isinstance(corpus.stories, StoryStore)  # packed arrays, not per-token Python lists
    assert all(len(s) <= 12 for s in corpus.stories)
    assert corpus.meta["n_truncated"] == 5 and corpus.meta["max_tokens"] == 12
    s = corpus.stories[0]
    assert s.text == texts[0][: s.offsets[-1, 1]]
    assert 0.9 <= corpus.coverage <= 1.0
    assert corpus.meta["tokenizer_sha256"] == tokenizer_fingerprint(tok)
    assert corpus.spacy_model.startswith("en_core_web_sm")


def test_load_corpus_files_texts_and_model(tok, tmp_path):
    texts = sentence_stories(4, seed=2)
    f = tmp_path / "stories.txt"
    f.write_text("\n<|endoftext|>\n".join(texts) + "\n")
    from_file = load_corpus([f], tok, progress=False)
    assert len(from_file) == 4 and from_file.stories[0].text == texts[0]
    assert len(load_corpus(str(f), tok, max_stories=2, progress=False)) == 2
    from_texts = load_corpus(texts, tok, max_stories=3, progress=False)
    assert isinstance(from_texts, TaggedCorpus) and len(from_texts) == 3

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, n_ctx=10, d_vocab=len(tok),
                                  attn_only=True, act_fn="gelu_new")
    model = HookedTransformer(cfg, tokenizer=tok)
    with_model = load_corpus(texts, model, progress=False)
    assert max(len(s) for s in with_model.stories) == 10  # the model's n_ctx, BOS included
    # HookedTransformer swaps in a BOS-adding copy of the tokenizer; it tokenises identically
    assert tokenizer_fingerprint(model.tokenizer) == tokenizer_fingerprint(tok)


def test_bad_input(tok):
    with pytest.raises(DataError, match="empty"):
        tag_corpus(["", "   \n"], tok, 32, progress=False)
    with pytest.raises(DataError, match="empty"):
        load_corpus([], tok)
    with pytest.raises(DataError, match="strings"):
        tag_corpus([3], tok, 32, progress=False)
    with pytest.raises(DataError, match="max_tokens"):
        tag_corpus(["A cat."], tok, 1, progress=False)
    with pytest.raises(DataError, match="HookedTransformer"):
        load_corpus(["A cat."], 42)


def test_streamed_without_text_matches_the_list_path(tok):
    texts = sentence_stories(30, seed=4) + ["   "]
    pulled = []

    def stream():
        for t in texts:
            pulled.append(t)
            yield t

    full = tag_corpus(texts, tok, 48, progress=False)
    lean = tag_corpus(stream(), tok, 48, progress=False, chunk_stories=8, keep_text=False)
    assert len(pulled) == len(texts) and len(lean) == len(full) == 30
    for name in ("tokens", "cont", "upos", "tag", "ent", "word"):
        assert np.array_equal(lean.stories.flat(name), full.stories.flat(name)), name
    assert lean.stories.vocab == full.stories.vocab and lean.coverage == full.coverage
    assert lean.meta["n_skipped_empty"] == 1 and lean.stories.text(0) == "" and full.stories.text(0) and texts[0].startswith(full.stories.text(0))
    assert not lean.stories[0].offsets.any() and full.stories[0].offsets.any()
    with pytest.raises(DataError, match="empty"):
        tag_corpus(iter(["", "  "]), tok, 48, progress=False)
    with pytest.raises(DataError, match="must be strings"):
        tag_corpus(iter(["a story.", 3]), tok, 48, progress=False)
