"""A corpus of stories tokenised for a model and tagged with part of speech.

:class:`TaggedStory` is the unit every analysis consumes: model token ids (BOS first),
the character span of each token in the text, and per token the spaCy annotation of the
word the token starts in (UPOS, fine tag, entity type), plus whether the token continues
a word begun by an earlier token. Tags come from :mod:`tinyinterp.analysis.pos`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BOS_TAG = "BOS"  # the <|endoftext|> token prepended to every story
SPACE_TAG = "SPACE"  # tokens made only of whitespace


@dataclass
class TaggedStory:
    text: str
    tokens: np.ndarray  # int64 [n]; tokens[0] is BOS
    offsets: np.ndarray  # int64 [n, 2]; character span of each token in ``text`` (BOS: (0, 0))
    upos: list[str]  # [n] UPOS of the word the token starts in; BOS_TAG / SPACE_TAG otherwise
    tag: list[str]  # [n] fine-grained (Penn) tag, same convention
    ent: list[str]  # [n] entity type ("" when none), e.g. "PERSON"
    word: list[str]  # [n] the word (as written) the token belongs to ("" for BOS/space)
    continuation: np.ndarray  # bool [n]; True when the token does not start its word

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class TaggedCorpus:
    stories: list[TaggedStory]
    spacy_model: str = ""  # "name==version" of the tagger
    coverage: float = 1.0  # share of non-space characters of words that were aligned to a token
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.stories)

    @property
    def n_tokens(self) -> int:
        return int(sum(len(s) for s in self.stories))

    def split(self, seed: int = 0) -> tuple["TaggedCorpus", "TaggedCorpus"]:
        """Two halves by story (deterministic): select on one, report on the other."""
        order = np.random.default_rng(seed).permutation(len(self.stories))
        half = len(order) // 2
        a = [self.stories[i] for i in sorted(order[:half])]
        b = [self.stories[i] for i in sorted(order[half:])]
        return (TaggedCorpus(a, self.spacy_model, self.coverage, dict(self.meta)),
                TaggedCorpus(b, self.spacy_model, self.coverage, dict(self.meta)))
