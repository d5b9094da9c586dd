"""A columnar, memory-mapped store of spaCy tags aligned to model tokens (one row per story).

The tag cache of :func:`~tinyinterp.analysis.corpus.tagging.tag_corpus` (it replaced one JSON
file per story: 2.1M files for the full dataset). A store is
a folder bound to one spaCy model (name and version) and one tokenizer (its fingerprint)::

    store.json              {"format", "spacy_model", "tokenizer_sha256"}
    part-<id>.arrow         Arrow IPC files, uncompressed (memory-mapped, zero-copy reads)

Each row is one story: ``key`` (sha256 of the text, 32 bytes) and the aligned record that
:func:`~tinyinterp.analysis.corpus.alignment.align_story` builds (token ids with BOS, offsets, word index
per token, continuation flags, and the spaCy words with their spans and tags). The text
itself is not stored: the caller reads it from its corpus files and looks its tags up by
hash, so a store holds no text a user did not pass in.

Tagging a corpus once serves every later run and every rank: each process tags only the
stories it needs that the store lacks and adds them as a new part file (written to a
temporary name and renamed, so a killed writer leaves no half part, and ranks writing at
the same time never touch the same file). A reader maps the parts and copies out only the
rows it asks for. Opening a store written for another spaCy model or tokenizer fails with
one line; stray temporary files of killed writers are removed on open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from tinyinterp.analysis.corpus.alignment import RECORD_FORMAT, pack_record
from tinyinterp.analysis.corpus.store import StoreBuilder, TaggedCorpus
from tinyinterp.errors import DataError

log = logging.getLogger(__name__)

STORE_FORMAT = 1
STORE_JSON = "store.json"
_STALE_TMP_S = 3600.0  # a temporary part older than this belongs to a killed writer
_INT_LISTS = ("tokens", "offsets", "widx", "w_start", "w_end")  # int32 list columns (offsets flattened: 2 per token)
_STR_LISTS = ("w_upos", "w_tag", "w_ent")
SCHEMA = pa.schema([("key", pa.binary(32)), *((c, pa.list_(pa.int32())) for c in _INT_LISTS),
                    ("cont", pa.list_(pa.bool_())), *((c, pa.list_(pa.string())) for c in _STR_LISTS)])


def text_key(text: str) -> bytes:
    """sha256 of a story's text: the row key."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class TagStore:
    """A folder of tagged stories for one (spaCy model, tokenizer); see the module docstring.

    ``TagStore(path, spacy_model, tokenizer_sha256)`` opens the store at ``path`` (creating it
    when missing or empty) and refuses one written for another model or tokenizer.
    """

    def __init__(self, path: str | os.PathLike, spacy_model: str, tokenizer_sha256: str):
        self.path = Path(path)
        self.spacy_model, self.tokenizer_sha256 = spacy_model, tokenizer_sha256
        meta_path = self.path / STORE_JSON
        if self.path.exists() and not self.path.is_dir():
            raise DataError(f"{self.path}: is a file, not a tag store folder; pass a folder (new or a tag store)")
        if meta_path.is_file():
            self._check(meta_path)
        elif self.path.is_dir() and any(p.name != ".lock" for p in self.path.iterdir() if not p.name.endswith(".tmp")):
            raise DataError(f"{self.path}: not a tag store (no {STORE_JSON}) and not empty; pass an empty or new folder")
        else:
            from tinyinterp.atomic import write_json

            write_json(meta_path, {"format": STORE_FORMAT, "spacy_model": spacy_model, "tokenizer_sha256": tokenizer_sha256})
        self._clean_stale()
        self._parts: list[pa.Table] = []
        self._names: set[str] = set()  # part files mapped
        self._keys: list[np.ndarray] = []  # per part: its sorted keys (S32), a view of the mapped file
        self.refresh()

    def _check(self, meta_path: Path) -> None:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{meta_path}: unreadable ({exc}); delete the folder {self.path} to re-tag") from None
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise DataError(f"{meta_path}: tag store format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                            f"this tinyinterp reads {STORE_FORMAT}; delete {self.path} to re-tag")
        have = (meta.get("spacy_model"), meta.get("tokenizer_sha256"))
        if have != (self.spacy_model, self.tokenizer_sha256):
            raise DataError(f"{self.path}: tagged with {have[0]} and tokenizer {str(have[1])[:12]}, not {self.spacy_model} "
                            f"and tokenizer {self.tokenizer_sha256[:12]}; pass another tag store folder for this model")

    def _clean_stale(self) -> None:
        """Remove temporary parts left by killed writers (old enough that no live writer owns them)."""
        now = time.time()
        for p in self.path.glob(".*.tmp"):
            try:
                if now - p.stat().st_mtime > _STALE_TMP_S:
                    p.unlink()
                    log.info("removed stale temporary file %s", p)
            except OSError:
                continue

    # ------------------------------------------------------------------------------------ reading

    def refresh(self) -> None:
        """Map part files written since the last call (by this or another process)."""
        for f in sorted(self.path.glob("part-*.arrow")):
            if f.name in self._names:
                continue
            try:
                table = pa.ipc.open_file(pa.memory_map(str(f), "r")).read_all()
            except (OSError, pa.ArrowInvalid) as exc:
                raise DataError(f"{f}: unreadable tag store part ({exc}); delete it to re-tag those stories") from None
            if not table.schema.equals(SCHEMA):
                raise DataError(f"{f}: not a tag store part of format {STORE_FORMAT}; delete it to re-tag those stories")
            keys = table.column("key").combine_chunks()
            keys = np.frombuffer(keys.buffers()[1], dtype="S32", count=len(keys), offset=32 * keys.offset)
            if len(keys) > 1 and not (keys[1:] > keys[:-1]).all():
                raise DataError(f"{f}: rows not sorted by key (not written by tinyinterp); delete it to re-tag those stories")
            self._parts.append(table)
            self._names.add(f.name)
            self._keys.append(keys)

    def __len__(self) -> int:
        """Rows over all parts (a story tagged by two processes at once counts twice)."""
        return sum(len(k) for k in self._keys)

    @property
    def n_parts(self) -> int:
        return len(self._parts)

    def locate(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Part and row of each key (``-1, -1`` where the store lacks it): binary search in each part's sorted keys."""
        q = np.asarray(keys, dtype="S32")
        part, row = np.full(len(q), -1, dtype=np.int64), np.full(len(q), -1, dtype=np.int64)
        for p, pk in enumerate(self._keys):
            todo = np.nonzero(part < 0)[0]
            if not len(todo) or not len(pk):
                continue
            at = np.minimum(np.searchsorted(pk, q[todo]), len(pk) - 1)
            hit = pk[at] == q[todo]
            part[todo[hit]], row[todo[hit]] = p, at[hit]
        return part, row

    def __contains__(self, key: bytes) -> bool:
        return bool(self.locate([key])[0][0] >= 0)

    def records(self, keys: Sequence[bytes], missing_ok: bool = False) -> list[dict[str, Any] | None]:
        """The aligned records of ``keys``: the fields :func:`~tinyinterp.analysis.corpus.alignment.align_story` returns, per-token
        ones as numpy arrays. Only the requested rows are copied out of the mapped parts. Parts that other processes
        wrote since this store was opened are mapped when a key is missing; a key still missing raises (``None``
        in its place with ``missing_ok``)."""
        part, row = self.locate(keys)
        if (part < 0).any():
            self.refresh()
            part, row = self.locate(keys)
        missing = np.nonzero(part < 0)[0]
        if len(missing) and not missing_ok:
            raise DataError(f"{self.path}: no tags for a story (sha256 {keys[missing[0]].hex()[:12]}); tag it first")
        out: list[dict[str, Any] | None] = [None] * len(keys)
        for p in np.unique(part[part >= 0]).tolist():
            items = np.nonzero(part == p)[0]
            for i, rec in zip(items.tolist(), _unpack(self._parts[p].take(pa.array(row[items])))):
                out[i] = rec
        return out

    # ------------------------------------------------------------------------------------ writing

    def add(self, items: Sequence[tuple[bytes, dict[str, Any]]]) -> None:
        """Write ``(key, record)`` pairs the store lacks as one new part file (atomically)."""
        from tinyinterp.atomic import atomic_path

        uniq = dict(items)  # one row per key
        if not uniq:
            return
        have = self.locate(list(uniq))[0] >= 0
        new = sorted(((k, r) for (k, r), h in zip(uniq.items(), have.tolist()) if not h), key=lambda kr: kr[0])  # sorted by key: binary search
        if not new:
            return
        batch = _pack(new)
        with atomic_path(self.path / f"part-{uuid.uuid4().hex}.arrow") as tmp:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
                writer.write_batch(batch)
        self.refresh()


def _pack(items: Sequence[tuple[bytes, dict[str, Any]]]) -> pa.RecordBatch:
    recs = [r for _, r in items]
    cols: dict[str, Any] = {"key": pa.array([k for k, _ in items], type=pa.binary(32))}
    cols["tokens"] = [r["tokens"] for r in recs]
    cols["offsets"] = [[x for pair in r["offsets"] for x in pair] for r in recs]
    cols["widx"] = [r["widx"] for r in recs]
    cols["cont"] = [[bool(c) for c in r["cont"]] for r in recs]
    for j, name in enumerate(("w_start", "w_end", "w_upos", "w_tag", "w_ent")):
        cols[name] = [[w[j] for w in r["words"]] for r in recs]
    arrays = [cols["key"]] + [pa.array(cols[f.name], type=f.type) for f in list(SCHEMA)[1:]]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def _unpack(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Records of ``table``'s rows, from flat numpy views of its list columns (per-token fields as numpy arrays)."""
    flat: dict[str, tuple[np.ndarray, Any]] = {}
    for name in (*_INT_LISTS, "cont", *_STR_LISTS):
        col = table.column(name).combine_chunks()
        values = col.flatten()
        vals = values.to_numpy(zero_copy_only=False)
        flat[name] = (np.asarray(col.offsets) - col.offsets[0].as_py(), vals.tolist() if name in _STR_LISTS else vals)
    for i in range(table.num_rows):
        def get(name: str):
            off, vals = flat[name]
            return vals[off[i]:off[i + 1]]

        words = [list(w) for w in zip(get("w_start").tolist(), get("w_end").tolist(), get("w_upos"), get("w_tag"),
                                       get("w_ent"))]
        yield {"v": RECORD_FORMAT, "tokens": get("tokens"), "offsets": get("offsets").reshape(-1, 2), "widx": get("widx"),
               "cont": get("cont"), "words": words}


def default_store_path(spacy_model: str, tokenizer_sha256: str) -> Path:
    """``$TINYINTERP_CACHE/tags/<hash of model and tokenizer>``: the store ``analyze`` uses unless told otherwise."""
    from tinyinterp.cache import cache_dir

    key = hashlib.sha256(f"{STORE_FORMAT}\0{spacy_model}\0{tokenizer_sha256}".encode()).hexdigest()[:24]
    return cache_dir("tags") / key


def corpus_from_store(texts: Iterable[str], store: TagStore, max_tokens: int | None, *, keep_text: bool = True,
                      chunk_stories: int = 1024) -> TaggedCorpus:
    """The :class:`~tinyinterp.analysis.corpus.TaggedCorpus` of ``texts`` (blank ones skipped), every story's
    tags read from ``store`` (tag them first with :func:`~tinyinterp.analysis.corpus.tagging.tag_into_store`); same result as
    :func:`~tinyinterp.analysis.corpus.tagging.tag_corpus`. ``texts`` is consumed a chunk at a time: memory holds the
    packed stories of ``texts`` only, so a rank that passes its own share holds only its share."""
    builder = StoreBuilder()
    covered = total = unaligned = truncated = n_in = 0
    source = iter(texts)
    while True:
        raw = list(islice(source, chunk_stories))
        if not raw:
            break
        n_in += len(raw)
        chunk = [t for t in raw if t.strip()]
        for text, rec in zip(chunk, store.records([text_key(t) for t in chunk])):
            c, t, u, cut = pack_record(builder, text, rec, max_tokens, keep_text)
            covered, total, unaligned, truncated = covered + c, total + t, unaligned + u, truncated + cut
        builder.flush()
    out = builder.build()
    if not len(out):
        raise DataError("the corpus is empty: no non-blank stories to tag")
    meta = {"tokenizer_sha256": store.tokenizer_sha256, "max_tokens": max_tokens, "n_cached": len(out), "n_tagged": 0,
            "n_truncated": truncated, "n_skipped_empty": n_in - len(out), "n_unaligned_tokens": unaligned,
            "tag_store": str(store.path)}
    return TaggedCorpus(out, spacy_model=store.spacy_model, coverage=covered / total if total else 1.0, meta=meta)
