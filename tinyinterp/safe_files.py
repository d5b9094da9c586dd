"""Bounded reads of files that come from users: regular files inside their folder, size-capped JSON.

A checkpoint, tokenizer or prepared-data folder may hold a symlink to ``/dev/zero``, a FIFO,
a path such as ``../../x`` in a manifest, or a 1 GB ``config.json``. Reading any of those
through here is a one-line error before anything is read: only regular files (after symlinks)
that lie inside the folder are opened (a FIFO is opened non-blocking, so it never hangs), and
JSON is read only up to a size cap; nesting and enormous integers are errors, not crashes.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from tinyinterp.errors import TinyInterpError

MAX_JSON_BYTES = 64 << 20  # tokenizer.json of a 50k BPE is ~2 MB; the largest JSON we write is far below this


def member(folder: str | os.PathLike, name: str, error: type[TinyInterpError] = TinyInterpError,
           what: str = "file") -> Path:
    """``folder/name`` when ``name`` is a plain name of a regular file inside ``folder`` (after symlinks).

    Does not check existence: a missing file is the caller's message."""
    folder = Path(folder)
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise error(f"{folder}: {what} name {name!r} is not a plain file name inside the folder; restore the file")
    p = folder / name
    if not os.path.lexists(p):
        return p
    real, root = p.resolve(), folder.resolve()
    if root not in real.parents:
        raise error(f"{p}: points outside {folder} (to {real}); only files inside the folder are read; "
                    "replace the link with the file itself")
    check_regular(p, error)
    return p


def check_regular(path: Path, error: type[TinyInterpError] = TinyInterpError) -> os.stat_result:
    """``os.stat`` of ``path``; refuse FIFOs, devices, sockets and folders (they can block or never end)."""
    try:
        st = os.stat(path)
    except PermissionError:
        raise error(f"{path}: permission denied; make it readable (chmod +r) and run the command again") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file"
        raise error(f"{path}: is {kind}, not a regular file; only regular files are read")
    return st


def read_bytes(path: str | os.PathLike, max_bytes: int, error: type[TinyInterpError] = TinyInterpError) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (checked before reading)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    except PermissionError:
        raise error(f"{path}: permission denied; make it readable (chmod +r) and run the command again") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            check_regular(path, error)
        if st.st_size > max_bytes:
            raise error(f"{path}: {st.st_size:,} bytes is larger than the {max_bytes:,} this file may have; "
                        "restore the original file")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{path}: larger than the {max_bytes:,} bytes this file may have; restore the original file")
    return data


def read_json(path: str | os.PathLike, error: type[TinyInterpError] = TinyInterpError,
              fix: str = "restore the original file", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file read with :func:`read_bytes`; every way it can be bad is one ``error`` line."""
    data = read_bytes(path, max_bytes, error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not valid UTF-8 (byte {exc.start}); {fix}") from None
    return parse_json(text, str(path), error, fix)


def parse_json(text: str, where: str, error: type[TinyInterpError] = TinyInterpError,
               fix: str = "restore the original file") -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: invalid JSON (line {exc.lineno}: {exc.msg}); {fix}") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply; {fix}") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise error(f"{where}: invalid JSON ({str(exc).splitlines()[0][:120]}); {fix}") from None
