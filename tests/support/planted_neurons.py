"""Synthetic tagged corpora and hand-wired tiny models with known ("planted") neurons.

Vocabulary (64 ids): 0 is BOS; each tag owns a block of ids; ``AMBIG`` ids are words that
are a NOUN in one slot and a VERB in another; ``SUFFIX`` is a continuation token that
completes some adjectives. Sentences follow ``DET [ADJ] NOUN VERB DET [ADJ] NOUN PUNCT``
(the ambiguous words fill NOUN or VERB slots), so every NOUN is followed by a VERB or PUNCT.
All text here is made up for the tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyinterp.analysis.corpus import BOS_TAG, TaggedCorpus, TaggedStory

D_VOCAB = 64
NOUN = list(range(1, 11))
VERB = list(range(11, 21))
ADJ = list(range(21, 29))
DET = list(range(29, 33))
PUNCT = list(range(33, 36))
AMBIG = list(range(36, 40))  # NOUN or VERB depending on the slot
SUFFIX = 40  # continuation token (tagged like its word)
SUCCESSORS = VERB + PUNCT  # what follows a NOUN
PLANTED = 0  # index of the planted NOUN neuron in layer 0 (a list of noun ids: a token detector)
SLOT = 1  # slot_model(): fires in a noun slot (after DET/ADJ), whatever the word: a part-of-speech neuron


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run faster on one thread; on a busy 2-core machine 2 threads are ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _story(rng: np.random.Generator, n_sentences: int, ambig_rate: float = 0.08) -> TaggedStory:
    toks, upos, words, cont = [0], [BOS_TAG], [""], [False]

    def add(tok: int, tag: str, continuation: bool = False) -> None:
        toks.append(tok)
        upos.append(tag)
        cont.append(continuation)
        words.append(words[-1] if continuation else f"w{tok}")

    def noun_phrase() -> None:
        add(int(rng.choice(DET)), "DET")
        if rng.random() < 0.5:
            add(int(rng.choice(ADJ)), "ADJ")
            if rng.random() < 0.2:
                add(SUFFIX, "ADJ", continuation=True)
        add(int(rng.choice(AMBIG if rng.random() < ambig_rate else NOUN)), "NOUN")

    for _ in range(n_sentences):
        noun_phrase()
        add(int(rng.choice(AMBIG if rng.random() < ambig_rate else VERB)), "VERB")
        noun_phrase()
        add(int(rng.choice(PUNCT)), "PUNCT")
    # text and character offsets consistent with the tokens (" w<id>" per word, "x" per suffix)
    text, offsets = "", [(0, 0)]
    for tok, c in zip(toks[1:], cont[1:]):
        piece = "x" if c else f" w{tok}"
        offsets.append((len(text), len(text) + len(piece)))
        text += piece
    # a continuation's word is its word start's word plus the suffix
    words = [w + "x" if i + 1 < len(cont) and cont[i + 1] else w for i, w in enumerate(words)]
    for i in range(1, len(words)):
        if cont[i]:
            words[i] = words[i - 1]
    return TaggedStory(text=text, tokens=np.array(toks, dtype=np.int64), offsets=np.array(offsets, dtype=np.int64),
                       upos=upos, tag=list(upos), ent=[""] * len(toks), word=words,
                       continuation=np.array(cont, dtype=bool))


def make_corpus(n_stories: int = 160, seed: int = 0, ambig_rate: float = 0.08) -> TaggedCorpus:
    rng = np.random.default_rng(seed)
    return TaggedCorpus([_story(rng, int(rng.integers(2, 5)), ambig_rate) for _ in range(n_stories)],
                        spacy_model="synthetic")


def tiny_config(d_mlp: int = 32, seed: int = 0):
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=d_mlp, n_ctx=64,
                                   d_vocab=D_VOCAB, act_fn="gelu_new", normalization_type="LN", seed=seed)


def random_model(seed: int = 0, d_mlp: int = 32):
    from transformer_lens import HookedTransformer

    return HookedTransformer(tiny_config(d_mlp, seed)).eval()


@torch.no_grad()
def planted_model(seed: int = 0, d_mlp: int = 32):
    """Neuron ``PLANTED`` of layer 0 fires exactly on NOUN ids and promotes the NOUN successors.

    Residual dim 0 carries +3 on noun ids and -3 elsewhere (same norm for every token, so the
    LayerNorm treats nouns and others alike); the neuron reads it. Its output writes dim 1,
    which the unembedding reads as a boost to VERB and PUNCT ids; every token's embedding adds
    about minus the neuron's mean output there. Dims 0 and 1 are kept free of everything else
    (position, attention, other neurons).
    """
    m = random_model(seed, d_mlp)
    g = torch.Generator().manual_seed(seed + 100)
    m.embed.W_E.data = torch.randn(D_VOCAB, 32, generator=g)
    m.embed.W_E.data[:, 0] = -3.0
    m.embed.W_E.data[NOUN, 0] = 3.0
    m.embed.W_E.data[:, 1] = -2.0  # cancels the neuron's mean output, so mean-ablation removes the boost
    m.pos_embed.W_pos.data[:, :2] = 0.0
    m.blocks[0].attn.W_O.data[..., :2] = 0.0
    m.blocks[0].attn.b_O.data[:2] = 0.0
    mlp = m.blocks[0].mlp
    mlp.W_in.data[0, :] = 0.0
    mlp.W_in.data[:, PLANTED] = 0.0
    mlp.W_in.data[0, PLANTED] = 3.0
    mlp.b_in.data[PLANTED] = -3.0
    mlp.W_out.data[:, :2] = 0.0
    mlp.W_out.data[PLANTED, :] = 0.0
    mlp.W_out.data[PLANTED, 1] = 2.0
    mlp.b_out.data[:2] = 0.0
    m.unembed.W_U.data[1, :] = 0.0
    m.unembed.W_U.data[1, SUCCESSORS] = 1.5
    return m


@torch.no_grad()
def slot_model(seed: int = 0, d_mlp: int = 32):
    """:func:`planted_model` plus neuron ``SLOT``, which fires on the word after a determiner or adjective
    unless that word is an adjective itself: the noun slot of ``DET [ADJ] NOUN``. It fires on "play"
    (an ``AMBIG`` id) used as a noun and not on "play" used as a verb, and on noun ids never seen.

    Residual dims 2 and 3 carry "this token is DET/ADJ/suffix" and "this token is ADJ" (±3); neurons 2
    and 3 read them. A permanent hook on ``blocks.0.mlp.hook_pre`` stands in for a previous-token head:
    ``SLOT``'s pre-activation is +3 where the previous token's neuron 2 and this token's neuron 3 say
    "noun slot", else -3.
    """
    m = planted_model(seed, d_mlp)
    prev_ids = DET + ADJ + [SUFFIX]
    for dim, ids in ((2, prev_ids), (3, ADJ)):
        m.embed.W_E.data[:, dim] = -3.0
        m.embed.W_E.data[ids, dim] = 3.0
    m.pos_embed.W_pos.data[:, 2:4] = 0.0
    m.blocks[0].attn.W_O.data[..., 2:4] = 0.0
    m.blocks[0].attn.b_O.data[2:4] = 0.0
    mlp = m.blocks[0].mlp
    mlp.W_in.data[2:4, :] = 0.0
    mlp.W_in.data[:, 1:4] = 0.0
    mlp.W_in.data[2, 2] = 1.0
    mlp.W_in.data[3, 3] = 1.0
    mlp.b_in.data[1:4] = 0.0

    def previous_token(pre, hook):  # [batch, pos, d_mlp]
        slot = torch.full_like(pre[..., SLOT], -3.0)
        slot[:, 1:] = torch.where((pre[:, :-1, 2] > 0) & (pre[:, 1:, 3] < 0), 3.0, -3.0)
        pre[..., SLOT] = slot
        return pre

    m.add_hook("blocks.0.mlp.hook_pre", previous_token, is_permanent=True)
    return m


def tag_encoding_model(seed: int = 0):
    """Embeddings encode the tag (shared direction per tag, tiny per-word noise): probe target."""
    m = random_model(seed)
    g = torch.Generator().manual_seed(seed + 200)
    base = {tag: torch.randn(32, generator=g) for tag in ("NOUN", "VERB", "ADJ", "DET", "PUNCT", "X")}
    for ids, tag in ((NOUN, "NOUN"), (VERB, "VERB"), (ADJ, "ADJ"), (DET, "DET"), (PUNCT, "PUNCT"), (AMBIG, "X")):
        for i in ids:
            m.embed.W_E.data[i] = base[tag] + 0.05 * torch.randn(32, generator=g)
    return m
