"""The two ways to a tagged corpus: stories read from files, or story texts you already hold.

* ``load_corpus(paths, model)`` reads files, folders, globs or ``hf:`` names with
  :func:`tinyinterp.load_stories` (normalised as for training) and tags them;
* ``corpus_from_texts(texts, model)`` tags the given texts as they are.

Nothing guesses whether a string is a path or a story: a story passed to ``load_corpus``
is an error that names ``corpus_from_texts``.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.corpus.tagging import tag_corpus
from tinyinterp.errors import DataError

_PATH_MAX = 255  # longer than any file name: a story, not a path


def _tokenizer(model_or_tokenizer, max_tokens: int | None):
    """The tokenizer and the default ``max_tokens`` (the model's ``n_ctx``) of a model, tokenizer or tokenizer folder."""
    obj = model_or_tokenizer
    if hasattr(obj, "cfg") and hasattr(obj, "tokenizer"):
        if obj.tokenizer is None:
            raise DataError("the model has no tokenizer; load it with tinyinterp.load_model(path) or pass a tokenizer")
        return obj.tokenizer, max_tokens if max_tokens is not None else int(obj.cfg.n_ctx)
    if isinstance(obj, (str, os.PathLike)):
        from tinyinterp.data.tokenizer import load_tokenizer

        return load_tokenizer(obj), max_tokens
    if hasattr(obj, "get_vocab"):
        return obj, max_tokens
    raise DataError(f"model_or_tokenizer is a {type(obj).__name__}; pass a HookedTransformer, a tokenizer or a tokenizer folder")


def _check_max_stories(max_stories: int | None) -> None:
    if max_stories is not None and max_stories < 1:
        raise DataError(f"max_stories={max_stories}: must be at least 1")


def _check_source(x) -> str:
    """``x`` as a source string; a story text (a line break, or longer than a file name) is an error."""
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if not isinstance(x, str):
        raise DataError(f"load_corpus: a source is a {type(x).__name__}; pass file paths, folders, globs or hf: names")
    if "\n" in x or len(x) > _PATH_MAX:
        raise DataError(f"load_corpus reads stories from files, and {x[:40]!r}... is story text, not a path; "
                        "tag texts with tinyinterp.corpus_from_texts(texts, model)")
    return x


def load_corpus(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    model_or_tokenizer,
    max_stories: int | None = None,
    *,
    max_tokens: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> TaggedCorpus:
    """Read stories from ``paths`` and tag them for a model: ``tinyinterp.load_corpus(["val.txt"], model)``.

    ``paths``: a file, folder, glob or ``hf:`` name, or a list of them, read with
    :func:`tinyinterp.load_stories` (a missing file is an error naming it). Story texts go to
    :func:`corpus_from_texts`. ``model_or_tokenizer``: a ``HookedTransformer`` with a tokenizer
    (``max_tokens`` then defaults to its ``n_ctx``), a tokenizer, or a tokenizer folder
    (``max_tokens`` then defaults to no limit).
    """
    from tinyinterp.data.readers import load_stories

    _check_max_stories(max_stories)
    _tokenizer(model_or_tokenizer, max_tokens)  # a bad model is reported before any file is read
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise DataError("load_corpus: no paths given; pass files, folders, globs or hf: names")
    texts = load_stories([_check_source(x) for x in items], max_stories=max_stories)
    return corpus_from_texts(texts, model_or_tokenizer, max_tokens=max_tokens, use_cache=use_cache, progress=progress)


def corpus_from_texts(
    texts: Iterable[str],
    model_or_tokenizer,
    max_stories: int | None = None,
    *,
    max_tokens: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> TaggedCorpus:
    """Tag story ``texts`` (used as given, blank ones skipped) for a model; see :func:`load_corpus` for
    ``model_or_tokenizer`` and ``max_tokens``. ``texts`` may be an iterator (consumed a chunk at a time)."""
    from itertools import islice

    _check_max_stories(max_stories)
    if isinstance(texts, (str, os.PathLike)):
        raise DataError("corpus_from_texts takes a list of story texts, not one string; "
                        "to read a file use tinyinterp.load_corpus(path, model)")
    tokenizer, max_tokens = _tokenizer(model_or_tokenizer, max_tokens)
    if isinstance(texts, Sequence) and not texts:
        raise DataError("the corpus is empty: no stories given")
    texts = texts[:max_stories] if isinstance(texts, Sequence) and max_stories else (
        islice(texts, max_stories) if max_stories else texts)
    return tag_corpus(texts, tokenizer, max_tokens, use_cache=use_cache, progress=progress)
