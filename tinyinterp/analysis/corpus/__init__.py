"""The tagged corpus every analysis reads: stories tokenised for a model and tagged with spaCy.

* :mod:`~tinyinterp.analysis.corpus.store` — :class:`TaggedStory`, the packed
  :class:`StoryStore` and :class:`TaggedCorpus` (halves, subsets).
* :mod:`~tinyinterp.analysis.corpus.alignment` — spaCy words to model tokens by character offsets.
* :mod:`~tinyinterp.analysis.corpus.tagging` — :func:`tag_corpus` (spaCy, tag cache).
* :mod:`~tinyinterp.analysis.corpus.loading` — :func:`load_corpus` (files or texts, for a model).
* :mod:`~tinyinterp.analysis.corpus.labels` — :func:`label_corpus`: tags and words as integer ids.
"""

from tinyinterp.analysis.corpus.labels import CorpusLabels, label_corpus
from tinyinterp.analysis.corpus.loading import load_corpus
from tinyinterp.analysis.corpus.store import BOS_TAG, SPACE_TAG, StoryStore, TaggedCorpus, TaggedStory
from tinyinterp.analysis.corpus.tagging import tag_corpus, tokenizer_fingerprint

__all__ = ["BOS_TAG", "SPACE_TAG", "CorpusLabels", "StoryStore", "TaggedCorpus", "TaggedStory", "label_corpus",
           "load_corpus", "tag_corpus", "tokenizer_fingerprint"]
