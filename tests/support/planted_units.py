"""Synthetic tagged tokens and planted unit activations with known truth, for the identity rules.

The generator writes made-up sentences ``DET|NUM [ADJ] NOUN VERB DET [ADJ] NOUN PUNCT`` (and
``PRON VERB ... PUNCT``) over an invented vocabulary. Ambiguous words ("play", "walk", ...)
fill NOUN or VERB slots; "one" is NUM before a noun and PRON as a subject. A sentence's first word
is capitalised, which gives it another token id with another tag mix ("One" vs "one"): the
identity controls must hold token ids fixed, not just lower-cased words. Planted units
(columns of ``acts``) are functions of the labels, so their truth is known:

``NOUN_UNIT``   fires on every NOUN *token*, including "play" used as a noun, not "play" as a verb;
``ONE_UNIT``    fires on the word "one" whatever its tag (a token detector);
``LIST_UNIT``   fires on the noun-only word types (a list of types: identity, not part of speech);
``IDENT_UNITS`` random functions of the word type (what a lookup or an embedding gives);
``NOISE_UNITS`` Gaussian noise.
PUNCT is a lookup-perfect tag (three types, never ambiguous) that no unit carries.
"""

from __future__ import annotations

import numpy as np

from tinyinterp.analysis.neurons.units import UnitActivations, from_arrays

NOUNS = [f"noun{i}" for i in range(40)]
VERBS = [f"verb{i}" for i in range(40)]
ADJS = [f"adj{i}" for i in range(20)]
DETS = ["the", "a", "an", "this"]
NUMS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
PRONS = ["he", "she", "it", "they"]
PUNCTS = [".", ",", "!"]
AMBIG = ["play", "walk", "love", "like", "back", "look", "help", "run"]
NOUN_UNIT, ONE_UNIT, LIST_UNIT = 0, 1, 2
IDENT_UNITS = list(range(3, 23))
NOISE_UNITS = list(range(23, 43))
N_UNITS = 43


def _sentence(rng: np.random.Generator) -> list[tuple[str, str]]:
    def pick(xs):
        return str(xs[rng.integers(len(xs))])

    def noun_phrase() -> list[tuple[str, str]]:
        r = rng.random()
        head = [("one", "NUM") if r < 0.2 else (pick(NUMS[1:]), "NUM") if r < 0.22 else (pick(DETS), "DET")]
        if rng.random() < 0.5:
            head.append((pick(ADJS), "ADJ"))
        return head + [(pick(AMBIG) if rng.random() < 0.1 else pick(NOUNS), "NOUN")]

    subj = [("one", "PRON")] if rng.random() < 0.1 else [(pick(PRONS), "PRON")] if rng.random() < 0.3 else noun_phrase()
    subj[0] = (subj[0][0].capitalize(), subj[0][1])  # sentence start: another token id, same word type
    verb = [(pick(AMBIG) if rng.random() < 0.2 else pick(VERBS), "VERB")]
    return subj + verb + noun_phrase() + [(pick(PUNCTS), "PUNCT")]


def planted_units(n_stories: int = 300, seed: int = 0, noise: float = 0.3) -> UnitActivations:
    """Tokens of ``n_stories`` synthetic stories (held out: odd stories) with the planted units above."""
    rng = np.random.default_rng(seed)
    words, tags, story = [], [], []
    for s in range(n_stories):
        for _ in range(int(rng.integers(3, 7))):
            for w, t in _sentence(rng):
                words.append(w)
                tags.append(t)
                story.append(s)
    vocab = sorted(set(words))
    tok = np.array([vocab.index(w) + 1 for w in words])
    words_a, tags_a = np.array(words), np.array(tags)
    n = len(words)
    acts = rng.normal(scale=noise, size=(n, N_UNITS)).astype(np.float32)
    acts[:, NOUN_UNIT] += tags_a == "NOUN"
    acts[:, ONE_UNIT] += np.char.lower(words_a) == "one"
    acts[:, LIST_UNIT] += np.isin(words_a, NOUNS)
    per_type = rng.normal(size=(len(IDENT_UNITS), len(vocab) + 1))
    acts[:, IDENT_UNITS] += per_type[:, tok].T
    names = ["noun", "one", "noun-list"] + [f"ident{i}" for i in range(len(IDENT_UNITS))] + \
        [f"noise{i}" for i in range(len(NOISE_UNITS))]
    return from_arrays(acts, tags, tok, words, story, held_out_stories=np.arange(1, n_stories, 2), unit_names=names)


def embedding_table(ua: UnitActivations, seed: int = 0, d: int = 8) -> np.ndarray:
    """A made-up embedding ``[d_vocab, d]``: a shared direction per majority tag plus per-word noise."""
    rng = np.random.default_rng(seed)
    major = ua.tag_counts(np.ones(len(ua.tags), bool)).argmax(1)  # per word type
    table = rng.normal(scale=0.5, size=(int(ua.token_ids.max()) + 1, d))
    table[ua.token_ids] += rng.normal(size=(ua.n_tags, d))[major[ua.words]]
    return table
