"""``load_corpus``: read stories from files (or take texts) and tag them for a model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.corpus.tagging import tag_corpus
from tinyinterp.errors import DataError


def _looks_like_sources(items: list) -> bool:
    """True when every item names a file/folder/glob/``hf:`` source rather than being story text."""
    def one(x) -> bool:
        if isinstance(x, os.PathLike):
            return True
        if not isinstance(x, str) or "\n" in x or len(x) > 4096:
            return False
        if x.startswith("hf:"):
            return True
        import glob

        try:
            return Path(x).expanduser().exists() or (any(ch in x for ch in "*?[") and bool(glob.glob(x)))
        except OSError:  # e.g. a one-line story longer than a file name may be
            return False

    return bool(items) and all(one(x) for x in items)


def load_corpus(
    sources_or_texts: str | os.PathLike | Sequence[str | os.PathLike],
    model_or_tokenizer,
    max_stories: int | None = None,
    *,
    max_tokens: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> TaggedCorpus:
    """Read (or take) stories and tag them for a model: ``tinyinterp.load_corpus(files, model)``.

    ``sources_or_texts``: a path, folder, glob or ``hf:`` name (or a list of them), read with
    :func:`tinyinterp.load_stories` (normalised as for training); or a list of story texts,
    used as given. A list counts as sources only when every item is a path-like object or
    an existing path/glob/``hf:`` name. ``model_or_tokenizer``: a ``HookedTransformer``
    with a tokenizer (``max_tokens`` then defaults to its ``n_ctx``), a tokenizer, or a
    tokenizer folder (``max_tokens`` then defaults to no limit).
    """
    from tinyinterp.data.readers import load_stories

    if max_stories is not None and max_stories < 1:
        raise DataError(f"max_stories={max_stories}: must be at least 1")
    obj = model_or_tokenizer
    if hasattr(obj, "cfg") and hasattr(obj, "tokenizer"):
        if obj.tokenizer is None:
            raise DataError("the model has no tokenizer; load it with tinyinterp.load_model(path) or pass a tokenizer")
        tokenizer = obj.tokenizer
        max_tokens = max_tokens if max_tokens is not None else int(obj.cfg.n_ctx)
    elif isinstance(obj, (str, os.PathLike)):
        from tinyinterp.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(obj)
    elif hasattr(obj, "get_vocab"):
        tokenizer = obj
    else:
        raise DataError(f"model_or_tokenizer is a {type(obj).__name__}; pass a HookedTransformer, a tokenizer or a tokenizer folder")
    if isinstance(sources_or_texts, (str, os.PathLike)):
        texts = load_stories(str(sources_or_texts), max_stories=max_stories)
    else:
        items = list(sources_or_texts)
        if not items:
            raise DataError("the corpus is empty: no sources or stories given")
        if _looks_like_sources(items):
            texts = load_stories([str(x) for x in items], max_stories=max_stories)
        else:
            texts = items[:max_stories] if max_stories is not None else items
    return tag_corpus(texts, tokenizer, max_tokens, use_cache=use_cache, progress=progress)
