"""Story readers: TinyStories ``.txt`` releases, JSON/JSONL, folders and globs, Hugging Face datasets.

Every reader yields one normalised story (a ``str``) at a time, so a corpus of any
size streams through tokenizer training and pre-tokenisation in constant memory.

Source strings accepted everywhere a corpus is expected:

* ``path/to/file.txt`` – stories separated by a line holding exactly ``<|endoftext|>``
  (the TinyStories release format); a file without any separator is one story per
  blank-line-separated block only if ``--txt-mode paragraphs`` is chosen, otherwise it
  is one story.
* ``path/to/file.jsonl`` / ``.json`` – objects with a ``text`` field (a JSON file may
  hold a list of such objects or of strings).
* ``path/to/folder`` – every ``.txt``, ``.jsonl`` and ``.json`` file under it, sorted.
* ``path/with/*.txt`` – a glob.
* ``hf:roneneldan/TinyStories`` or ``hf:roneneldan/TinyStories:validation`` – a Hugging
  Face dataset through :mod:`datasets` (needs the network or a local HF cache).
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tinyinterp.data.normalize import normalize_story
from tinyinterp.errors import DataError
from tinyinterp.hashing import sha256_file
from tinyinterp.safe_files import check_regular, parse_json

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".json")
HF_PREFIX = "hf:"
# Stories longer than this many characters are split at paragraph boundaries, so one
# enormous "story" never has to be held as a single tokenizer input.
MAX_STORY_CHARS = 200_000


@dataclass(frozen=True)
class Source:
    """One concrete input: a local file (with its hash) or a Hugging Face dataset split."""

    path: str
    kind: str  # "txt" | "jsonl" | "json" | "hf"
    sha256: str | None = None
    n_bytes: int | None = None

    def to_json(self) -> dict:
        return {"path": self.path, "kind": self.kind, "sha256": self.sha256, "bytes": self.n_bytes}


def resolve_sources(specs: str | Iterable[str]) -> list[Source]:
    """Expand paths, folders, globs and ``hf:`` names into a sorted, de-duplicated list."""
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    out: list[Source] = []
    seen: set[str] = set()
    for spec in specs:
        spec = str(spec)
        if spec.startswith(HF_PREFIX):
            out.append(Source(spec, "hf"))
            continue
        p = Path(spec).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES)
            if not files:
                raise DataError(f"{spec}: folder holds no .txt, .jsonl or .json files")
        elif p.is_file():
            files = [p]
        elif p.exists():
            check_regular(p, DataError)  # a FIFO or device: one line, never a read that blocks
        elif any(c in spec for c in "*?["):
            files = sorted(Path(f) for f in glob.glob(spec, recursive=True) if Path(f).is_file())
            if not files:
                raise DataError(f"{spec}: the glob matches no files")
        else:
            raise DataError(f"{spec}: no such file or folder (give a .txt/.jsonl/.json file, a folder, a glob or hf:NAME[:SPLIT])")
        for f in files:
            key = str(f.resolve())
            if key in seen:
                continue
            seen.add(key)
            suffix = f.suffix.lower()
            if suffix not in SUPPORTED_SUFFIXES:
                raise DataError(f"{f}: unsupported file type {suffix or '(none)'}; use .txt (<|endoftext|>-separated), .jsonl or .json")
            try:
                out.append(Source(str(f), suffix[1:], sha256_file(f), f.stat().st_size))
            except PermissionError:
                raise DataError(f"{f}: permission denied; make it readable (chmod +r) or leave it out of --data") from None
    if not out:
        raise DataError("no corpus given: pass at least one file, folder, glob or hf:NAME")
    return out


def _check_text_file(path: str) -> None:
    with open(path, "rb") as fh:
        head = fh.read(8192)
    if b"\x00" in head:
        raise DataError(f"{path}: looks like a binary file (NUL bytes); expected UTF-8 text")


def _read_text(path: str) -> str:
    _check_text_file(path)
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid UTF-8 (byte {exc.start}); re-encode it, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


def _utf8_lines(path: str, limit: int = MAX_STORY_CHARS) -> Iterator[str]:
    """Lines of a UTF-8 file, a line longer than ``limit`` bytes in pieces (so one enormous line is
    never held whole); an invalid byte is reported with its line and byte offset."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lineno = 0, 1
    with open(path, "rb") as fh:
        while True:
            raw = fh.readline(limit)
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the previous piece
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}: not valid UTF-8 (line {lineno}, byte {offset - pending + exc.start}); "
                    "re-encode it, e.g. `iconv -f latin1 -t utf-8`"
                ) from None
            if not raw:
                return
            offset += len(raw)
            lineno += raw.endswith(b"\n")
            yield text


def _iter_txt(path: str) -> Iterator[str]:
    _check_text_file(path)
    buf: list[str] = []
    n_chars = 0
    for line in _utf8_lines(path):
        if line.strip() == EOT:
            yield "".join(buf)
            buf, n_chars = [], 0
            continue
        if EOT in line:  # separator inline with text
            *done, line = line.split(EOT)
            for piece in done:
                buf.append(piece)
                yield "".join(buf)
                buf, n_chars = [], 0
        buf.append(line)
        n_chars += len(line)
        if n_chars > MAX_STORY_CHARS:  # one enormous "story": hand it on in pieces, cut between words
            text = "".join(buf)
            cut = max(text.rfind("\n"), text.rfind(" ")) + 1 or len(text)
            yield text[:cut]
            buf = [text[cut:]]
            n_chars = len(buf[0])
    if buf:
        yield "".join(buf)


def _texts_from_json_obj(obj, path: str, where: str) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        if "text" not in obj or not isinstance(obj["text"], str):
            raise DataError(f"{path}: {where} has no string field 'text'")
        yield obj["text"]
    else:
        raise DataError(f"{path}: {where} is {type(obj).__name__}; expected an object with a 'text' field")


def _iter_jsonl(path: str) -> Iterator[str]:
    _check_text_file(path)
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{i}: not valid UTF-8 (byte {exc.start} of the line); re-encode it, "
                                "e.g. `iconv -f latin1 -t utf-8`") from None
            if not line.strip():
                continue
            obj = parse_json(line, f"{path}:{i}", DataError, "fix or remove that line")
            yield from _texts_from_json_obj(obj, path, f"line {i}")


def _iter_json(path: str) -> Iterator[str]:
    data = parse_json(_read_text(path), path, DataError, "fix the file")
    items = data if isinstance(data, list) else [data]
    for i, obj in enumerate(items):
        yield from _texts_from_json_obj(obj, path, f"item {i}")


def _iter_hf(spec: str) -> Iterator[str]:
    name, _, split = spec[len(HF_PREFIX):].partition(":")
    split = split or "train"
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError("reading hf: datasets needs the `datasets` package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds when offline
        raise DataError(
            f"{spec}: could not load Hugging Face dataset {name!r} split {split!r} "
            f"({type(exc).__name__}); are you offline? Download it once with network access, "
            "or pass local .txt/.jsonl files instead"
        ) from None
    for row in ds:
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise DataError(f"{spec}: rows have no string 'text' field")
        yield text


def _split_long(story: str) -> Iterator[str]:
    if len(story) <= MAX_STORY_CHARS:
        yield story
        return
    start = 0
    while start < len(story):
        end = min(start + MAX_STORY_CHARS, len(story))
        if end < len(story):
            cut = story.rfind("\n", start, end)
            if cut <= start:
                cut = story.rfind(" ", start, end)
            end = cut + 1 if cut > start else end
        yield story[start:end]
        start = end


def iter_raw(source: Source) -> Iterator[str]:
    readers = {"txt": _iter_txt, "jsonl": _iter_jsonl, "json": _iter_json, "hf": _iter_hf}
    yield from readers[source.kind](source.path)


def iter_stories(sources: str | Iterable[str] | Iterable[Source], dedupe: bool = False) -> Iterator[str]:
    """Yield normalised, non-empty stories from every source, in order.

    ``dedupe`` drops exact repeats (after normalisation) using a set of 16-byte hashes.
    """
    srcs = [s for s in sources] if not isinstance(sources, (str, os.PathLike)) else [sources]
    if srcs and not all(isinstance(s, Source) for s in srcs):
        srcs = resolve_sources([str(s) for s in srcs])
    seen: set[bytes] = set()
    for src in srcs:
        for raw in iter_raw(src):
            story = normalize_story(raw)
            if not story:
                continue
            if dedupe:
                key = hashlib.blake2b(story.encode("utf-8"), digest_size=16).digest()
                if key in seen:
                    continue
                seen.add(key)
            yield from _split_long(story)


def load_stories(sources: str | Iterable[str], max_stories: int | None = None, dedupe: bool = False) -> list[str]:
    """Read stories into a list (at most ``max_stories``); raise if there are none."""
    out: list[str] = []
    for story in iter_stories(sources, dedupe=dedupe):
        out.append(story)
        if max_stories is not None and len(out) >= max_stories:
            break
    if not out:
        names = sources if isinstance(sources, str) else ", ".join(map(str, sources))
        raise DataError(f"{names}: no stories found (the corpus is empty or whitespace only); pass files that hold text")
    return out
