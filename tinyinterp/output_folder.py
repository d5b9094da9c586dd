"""Output folders: the one rule every command that writes a folder follows.

* A folder that exists and is not empty is written only when this command wrote it before,
  recognised by the marker file ``.tinyinterp-output.json`` it leaves (it names the command
  and lists the files it wrote). Anything else is refused and left untouched.
* The output must not be, contain, or (for a folder input) lie inside one of the command's
  inputs: a command never writes over or deletes what it reads.
* ``overwrite`` replaces only the files the marker lists; files the user added are kept.
* One writer per folder: a second command writing the same folder is refused while the first
  holds the folder's lock (``flock`` on the folder itself, so no lock file is left behind).
* A kill leaves either the old output, the new one, or a marker that says ``complete: false``;
  a rerun of the same command replaces such an interrupted output without ``--overwrite``,
  and removes the hidden staging folders a kill left.

:func:`write_output` is the one way to do all of this: it yields a staging folder inside the
output (same file system, so every move is a rename), and moves the files in when the block ends.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from tinyinterp.atomic import remove_stale_temps, write_json
from tinyinterp.errors import ConfigError

log = logging.getLogger(__name__)

MARKER = ".tinyinterp-output.json"
STAGING_PREFIX = ".tinyinterp-staging-"
MAX_MARKER_BYTES = 1 << 20

HELP = ("OUT must be new, empty, or an earlier output of this command; --overwrite replaces only the files that "
        "output lists (others are kept); a folder that holds or lies inside an input is refused")

T = TypeVar("T")
# a folder written before markers existed: how each command recognises its own output
Legacy = Callable[[Path], "list[str] | None"]


def read_marker(folder: Path) -> dict | None:
    """The marker of ``folder`` (``{"command", "files", "complete"}``), or None when there is none or it is unreadable."""
    p = folder / MARKER
    try:
        if not p.is_file() or p.stat().st_size > MAX_MARKER_BYTES:
            return None
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    ok = isinstance(m, dict) and isinstance(m.get("command"), str) and isinstance(m.get("files"), list) \
        and all(isinstance(f, str) and f and "/" not in f and f not in (".", "..") for f in m["files"])
    return m if ok else None


def check_complete(folder: Path, command: str) -> None:
    """Refuse to read an output whose writing was interrupted (marker with ``complete: false``)."""
    m = read_marker(folder)
    if m is not None and m.get("complete") is False:
        raise ConfigError(f"{folder}: writing it was interrupted (a killed `tinyinterp {m['command']}`); "
                          f"rerun that command with the same --out to finish it")


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_inputs(out: Path, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse an output folder that is an input, holds one, or lies inside an input folder."""
    o = out.resolve()
    for inp in inputs:
        s = str(inp)
        if not s or s.startswith("hf:"):
            continue
        i = Path(s).expanduser()
        try:
            i = i.resolve()
        except OSError:
            continue
        if _is_within(i, o):
            raise ConfigError(f"{out}: holds the input {inp}; writing there could destroy it; choose an output folder "
                              "outside the inputs")
        if i.is_dir() and _is_within(o, i):
            raise ConfigError(f"{out}: lies inside the input folder {inp}; choose an output folder outside the inputs")


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != MARKER and not p.name.startswith(STAGING_PREFIX))


def every_file(folder: Path) -> list[str]:
    """``legacy`` for a cache entry (keyed by its inputs): every visible file in it is the command's."""
    return [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


def owned_files(out: Path, command: str, legacy: Legacy | None = None) -> list[str] | None:
    """Files of an earlier output of ``command`` in ``out`` (None: not its output)."""
    m = read_marker(out)
    if m is not None:
        return m["files"] if m["command"] == command else None
    return legacy(out) if legacy is not None else None


def check_output(out: Path, command: str, inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False,
                 legacy: Legacy | None = None, what: str = "output",
                 fix: str = "pass --overwrite to replace it (only the files it wrote) or choose another folder") -> list[str]:
    """Apply the rule (module doc) to ``out`` without changing anything; return the files to replace.
    ``fix``: the advice when ``out`` holds an earlier output and ``overwrite`` is not set."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file, not a folder; choose another --out (a folder for the {what})")
    check_inputs(out, inputs)
    if not out.exists():
        return []
    try:
        entries = _entries(out)
    except PermissionError:
        raise ConfigError(f"{out}: cannot list the folder (permission denied); choose a folder you can write") from None
    mine = owned_files(out, command, legacy)
    if mine is None:
        m = read_marker(out)
        if m is not None:
            raise ConfigError(f"{out}: holds the output of `tinyinterp {m['command']}`; nothing was changed; "
                              f"choose another folder for the {what}")
        if entries:
            raise ConfigError(f"{out}: is not empty and was not written by `tinyinterp {command}`; nothing was "
                              f"changed; choose a new or empty folder for the {what}")
        return []
    interrupted = (read_marker(out) or {}).get("complete") is False
    present = [f for f in mine if (out / f).exists()]
    if present and not overwrite and not interrupted:
        raise ConfigError(f"{out}: already holds a {what} written by `tinyinterp {command}`; {fix}")
    return mine


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` itself; refuse when another process holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{folder}: another tinyinterp process is writing this folder ({what}); wait for it "
                              "to finish or choose another folder") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def make_folder(out: Path, what: str) -> bool:
    """Create ``out`` (and parents); True when it did not exist. One-line errors for permissions and files."""
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{out}: {existing} is a file; choose another folder for the {what}")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{out}: {existing} is not writable (permission denied); choose a folder you can write")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the folder ({exc.strerror}); choose a folder you can write") from None
    return created


def clean_staging(out: Path) -> None:
    """Remove staging folders a killed run left in ``out`` (call under the folder's lock)."""
    for p in out.glob(STAGING_PREFIX + "*"):
        shutil.rmtree(p, ignore_errors=True)


@contextmanager
def claimed(out: Path, check: Callable[[], T], what: str) -> Iterator[T]:
    """Run ``check`` (it raises when ``out`` may not be written), create ``out``, lock it, run
    ``check`` again under the lock and yield its result; remove the stale staging folders and
    temporary files a killed run left. When the block fails, a folder this call created is
    removed again if it is still empty."""
    check()
    created = make_folder(out, what)
    try:
        with folder_lock(out, what):
            result = check()
            clean_staging(out)
            remove_stale_temps(out)
            yield result
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


@contextmanager
def write_output(out: str | os.PathLike, command: str, inputs: Iterable[str | os.PathLike] = (),
                 overwrite: bool = False, legacy: Legacy | None = None, what: str = "output") -> Iterator[Path]:
    """Yield an empty staging folder; when the block ends without error, its files replace the
    earlier output of ``command`` in ``out`` (see the module doc). On error nothing in ``out`` changes,
    and a folder this call created is removed again."""
    out = Path(out).expanduser()
    with claimed(out, lambda: check_output(out, command, inputs, overwrite, legacy, what), what) as old:
        stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
        try:
            yield stage
            _publish(stage, out, command, old)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def mark(out: Path, command: str, files: list[str], complete: bool = True) -> None:
    """Write ``out``'s marker: ``command`` wrote ``files`` (``complete``: and finished writing them)."""
    write_json(out / MARKER, {"command": command, "files": sorted(files), "complete": complete})


def _publish(stage: Path, out: Path, command: str, old: list[str]) -> None:
    new = sorted(p.name for p in stage.iterdir())
    if any((stage / f).is_dir() for f in new):
        raise RuntimeError(f"{stage}: output folders are flat; found a sub-folder")  # a bug, not a user error
    for f in new:
        with open(stage / f, "rb+") as fh:
            os.fsync(fh.fileno())
    # the marker lists old and new files while they are mixed, so a killed publish is still ours
    mark(out, command, sorted(set(old) | set(new)), complete=False)
    for f in new:
        os.replace(stage / f, out / f)
    for f in sorted(set(old) - set(new)):
        p = out / f
        if p.is_file() or p.is_symlink():
            p.unlink()
    mark(out, command, new)
    _fsync_dir(out)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on folders
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)
