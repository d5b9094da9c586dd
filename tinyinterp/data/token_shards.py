"""Pre-tokenise a corpus into uint16 memory-mapped shards plus ``meta.json``.

Layout of a prepared-data folder::

    meta.json          sources (path, sha256, bytes), tokenizer hash, split rule,
                       token/byte/story counts per split, the fingerprint of all inputs
    train-00000.bin    uint16 tokens: <|endoftext|> story <|endoftext|> story ...
    val-00000.bin

Each story is stored as ``<|endoftext|>`` followed by its tokens, so every story starts
with the BOS token, as ``HookedTransformer.to_tokens`` prepends it. The split is by story:
files passed as ``eval_sources`` form the validation split and never enter training;
without them, a story goes to validation when a hash of its text falls below
``val_fraction`` (deterministic, independent of file order). Running again with the same
inputs finds the same fingerprint and does nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from tinyinterp.atomic import write_json
from tinyinterp.data.readers import Source, iter_stories, resolve_sources
from tinyinterp.data.tokenizer import load_tokenizer, tokenizer_sha256
from tinyinterp.errors import DataError
from tinyinterp.hashing import sha256_json
from tinyinterp.safe_files import member, read_json
from tinyinterp.output_folder import check_complete, check_output, every_file, read_marker, write_output

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
BATCH_STORIES = 512
BATCH_CHARS = 250_000  # also cap the characters per tokenizer call: one enormous story stays bounded in memory


def story_in_val(story: str, val_fraction: float) -> bool:
    """Deterministic story-level split: hash of the text, compared with ``val_fraction``."""
    if val_fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(story.encode("utf-8"), digest_size=8).digest(), "little")
    return h / 2**64 < val_fraction


def fingerprint(train: Sequence[Source], evals: Sequence[Source], tok_hash: str, val_fraction: float, dedupe: bool) -> str:
    return sha256_json({
        "format": FORMAT_VERSION,
        "train": [(s.path if s.kind == "hf" else s.sha256) for s in train],
        "eval": [(s.path if s.kind == "hf" else s.sha256) for s in evals],
        "tokenizer": tok_hash,
        "val_fraction": val_fraction if not evals else None,
        "dedupe": dedupe,
    })


class _ShardWriter:
    def __init__(self, folder: Path, split: str, shard_tokens: int):
        self.folder, self.split, self.shard_tokens = folder, split, shard_tokens
        self.files: list[str] = []
        self.n_tokens = self.n_bytes = self.n_stories = 0
        self._buf: list[np.ndarray] = []
        self._buf_len = 0

    def add(self, ids: list[int], n_bytes: int, eot: int) -> None:
        arr = np.empty(len(ids) + 1, dtype=np.uint16)
        arr[0] = eot
        arr[1:] = ids
        self._buf.append(arr)
        self._buf_len += len(arr)
        self.n_tokens += len(arr)
        self.n_bytes += n_bytes
        self.n_stories += 1
        if self._buf_len >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        name = f"{self.split}-{len(self.files):05d}.bin"
        np.concatenate(self._buf).tofile(self.folder / name)
        self.files.append(name)
        self._buf, self._buf_len = [], 0

    def summary(self) -> dict:
        return {"files": self.files, "tokens": self.n_tokens, "bytes": self.n_bytes, "stories": self.n_stories}


def prepare_data(
    train_sources: str | Iterable[str],
    tokenizer_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    eval_sources: str | Iterable[str] | None = None,
    val_fraction: float = 0.01,
    dedupe: bool = True,
    shard_tokens: int = 100_000_000,
    overwrite: bool = False,
) -> Path:
    """Tokenise ``train_sources`` (and ``eval_sources``) into ``out_dir``; a no-op if up to date.

    Without ``out_dir`` the folder is ``<cache>/data/<fingerprint>`` (see :mod:`tinyinterp.cache`).
    ``out_dir`` follows :mod:`tinyinterp.output_folder`: an earlier ``prepare`` output for other
    inputs is replaced only with ``overwrite`` (and only its own files); any other non-empty
    folder, or one that holds an input, is refused.
    """
    train, evals = _split_sources(train_sources, eval_sources)
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction={val_fraction}: must be in [0, 1)")
    tok_hash = tokenizer_sha256(tokenizer_dir)
    fp = fingerprint(train, evals, tok_hash, val_fraction, dedupe)
    cached = out_dir is None
    if cached:
        from tinyinterp.cache import cache_dir

        out_dir = cache_dir("data") / fp[:16]
    out_dir = Path(out_dir).expanduser()
    if _up_to_date(out_dir, fp):
        log.info("prepared data in %s is up to date (fingerprint %s)", out_dir, fp[:12])
        return out_dir
    specs = [train_sources] if isinstance(train_sources, (str, os.PathLike)) else list(train_sources)
    specs += [eval_sources] if isinstance(eval_sources, (str, os.PathLike)) else list(eval_sources or [])
    inputs = [*map(str, specs), *(s.path for s in (*train, *evals) if s.kind != "hf"), str(tokenizer_dir)]
    # a cache entry is keyed by its inputs: everything in it is ours to replace
    legacy, overwrite = (every_file, True) if cached else (_legacy_files, overwrite)
    check_output(out_dir, "prepare", inputs, overwrite, legacy, what="prepared-data folder")
    tok, eot = _shard_tokenizer(tokenizer_dir)
    with write_output(out_dir, "prepare", inputs, overwrite, legacy, what="prepared-data folder") as stage:
        writers = _encode(train, evals, tok, eot, stage, val_fraction, dedupe, shard_tokens)
        if writers["train"].n_stories == 0:
            raise DataError(f"{', '.join(s.path for s in train)}: no training stories (empty or whitespace-only corpus); "
                            "pass --data files that hold text")
        meta = {
            "format": FORMAT_VERSION,
            "fingerprint": fp,
            "tokenizer": {"path": str(Path(tokenizer_dir).resolve()), "sha256": tok_hash, "vocab_size": len(tok), "eot_id": eot},
            "sources": {"train": [s.to_json() for s in train], "eval": [s.to_json() for s in evals]},
            "split": {"rule": "eval files" if evals else "story hash", "val_fraction": None if evals else val_fraction, "dedupe": dedupe},
            "dtype": "uint16",
            "splits": {k: w.summary() for k, w in writers.items()},
        }
        write_json(stage / "meta.json", meta)
    sp = meta["splits"]
    log.info("prepared %s: train %d tokens / %d stories, val %d tokens / %d stories",
             out_dir, sp["train"]["tokens"], sp["train"]["stories"], sp["val"]["tokens"], sp["val"]["stories"])
    return out_dir


def _split_sources(train_sources, eval_sources) -> tuple[list[Source], list[Source]]:
    """Resolve the sources; a training file that is also an evaluation file leaves training."""
    train = resolve_sources(train_sources)
    evals = resolve_sources(eval_sources) if eval_sources else []
    eval_keys = {s.sha256 for s in evals if s.sha256}
    overlap = [s.path for s in train if s.sha256 and s.sha256 in eval_keys]
    if overlap:
        log.warning("dropping %d training file(s) that are also evaluation files: %s", len(overlap), overlap)
        train = [s for s in train if not (s.sha256 and s.sha256 in eval_keys)]
        if not train:
            raise DataError("every training file is also an evaluation file; pass different --data and --eval")
    return train, evals


def _read_meta(folder: Path) -> dict | None:
    try:
        meta = read_json(folder / "meta.json", DataError)
    except (DataError, OSError):
        return None
    ok = isinstance(meta, dict) and isinstance(meta.get("splits"), dict) and all(
        isinstance(sp, dict) and isinstance(sp.get("files"), list) and all(_plain(f) for f in sp["files"])
        for sp in meta["splits"].values())
    return meta if ok else None


def _plain(name) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and name not in (".", "..")


def _up_to_date(folder: Path, fp: str) -> bool:
    marker = read_marker(folder)
    meta = _read_meta(folder)
    if meta is None or meta.get("fingerprint") != fp or (marker is not None and marker.get("complete") is False):
        return False
    return all((folder / f).is_file() for sp in meta["splits"].values() for f in sp["files"])


def _legacy_files(folder: Path) -> list[str] | None:
    """A prepared-data folder written before output markers: ``meta.json`` names its files."""
    meta = _read_meta(folder)
    if meta is None or "fingerprint" not in meta:
        return None
    return ["meta.json", *(f for sp in meta["splits"].values() for f in sp["files"])]


def _shard_tokenizer(tokenizer_dir: str | os.PathLike):
    """The tokenizer and its ``<|endoftext|>`` id; refuse one whose ids do not fit uint16."""
    tok = load_tokenizer(tokenizer_dir)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    if eot is None or eot == tok.unk_token_id and tok.unk_token != "<|endoftext|>":
        eot = tok.eos_token_id
    if len(tok) > 65535:
        raise DataError(f"{tokenizer_dir}: {len(tok)} ids do not fit uint16 shards (max 65535)")
    return tok, eot


def _encode(train: Sequence[Source], evals: Sequence[Source], tok, eot: int, folder: Path, val_fraction: float,
            dedupe: bool, shard_tokens: int) -> dict[str, _ShardWriter]:
    """Tokenise every story into the train / val shard writers of ``folder``."""
    writers = {"train": _ShardWriter(folder, "train", shard_tokens), "val": _ShardWriter(folder, "val", shard_tokens)}
    if evals:
        _encode_into(iter_stories(train, dedupe=dedupe), lambda s: "train", tok, eot, writers)
        _encode_into(iter_stories(evals, dedupe=dedupe), lambda s: "val", tok, eot, writers)
    else:
        _encode_into(iter_stories(train, dedupe=dedupe), lambda s: "val" if story_in_val(s, val_fraction) else "train",
                     tok, eot, writers)
    for w in writers.values():
        w.flush()
    return writers


def _encode_into(stories: Iterable[str], split_of: Callable[[str], str], tok, eot: int,
                 writers: dict[str, _ShardWriter]) -> None:
    """Batches of at most ``BATCH_STORIES`` stories / ``BATCH_CHARS`` characters through the tokenizer."""
    batch: list[str] = []
    bar = tqdm(desc="tokenising", unit=" stories", leave=False)

    def flush():
        ids = tok(batch, add_special_tokens=False)["input_ids"]
        for story, toks in zip(batch, ids):
            writers[split_of(story)].add(toks, len(story.encode("utf-8")), eot)
        bar.update(len(batch))
        batch.clear()

    n_chars = 0
    try:
        for s in stories:
            batch.append(s)
            n_chars += len(s)
            if len(batch) >= BATCH_STORIES or n_chars >= BATCH_CHARS:
                flush()
                n_chars = 0
        if batch:
            flush()
    finally:  # clear the bar's line, also when a bad file stops the reading
        bar.close()


@dataclass
class PreparedData:
    """Read-only view of a prepared-data folder."""

    path: Path
    meta: dict

    @classmethod
    def open(cls, path: str | os.PathLike) -> "PreparedData":
        p = Path(path)
        mp = p / "meta.json"
        if not mp.exists():
            raise DataError(f"{p}: not a prepared-data folder (no meta.json); run `tinyinterp prepare` first")
        check_complete(p, "prepare")
        meta = _read_meta(p)
        if meta is None:
            raise DataError(f"{mp}: unreadable or not a prepared-data meta.json; run `tinyinterp prepare --overwrite` again")
        return cls(p, meta)

    def tokens(self, split: str) -> list[np.memmap]:
        files = self.meta["splits"][split]["files"]
        return [np.memmap(member(self.path, f, DataError, "shard"), dtype=np.uint16, mode="r") for f in files]

    def n_tokens(self, split: str) -> int:
        return int(self.meta["splits"][split]["tokens"])

    def n_bytes(self, split: str) -> int:
        return int(self.meta["splits"][split]["bytes"])
