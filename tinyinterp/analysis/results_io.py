"""The one way analysis results are written and read: a folder of JSON (and CSV) files.

Every result class has ``save(folder) -> folder`` and ``load(folder)``; the files of each
are listed in its docstring. They all go through this module:

* :func:`jsonable` — the one JSON sanitiser: NaN/inf become ``null``, numpy scalars and
  arrays become Python numbers and lists, tuples become lists, anything else that JSON
  cannot hold (paths, enums) becomes its ``str``;
* :func:`write_result_json` / :func:`read_result_json` / :func:`read_result` — atomic write of a
  sanitised object; read (and parse) with a one-line error naming the file and the fix;
* :func:`folder_lock` — only one analysis writes a folder at a time (an advisory lock,
  ``.lock``), and a folder that a failed analysis created is removed again;
* :func:`staged_results` / :func:`check_complete` — results folders readers see whole or not at
  all. An analysis writes every file into ``OUT/.staging/``; only when all are written does
  :func:`commit` move them into ``OUT`` and write ``OUT/complete.json`` last (each file's size
  and sha256). A run killed while computing (any rank, any stage) leaves ``OUT`` as it was plus
  a ``.staging`` folder the next run removes; a run killed during the renames leaves
  ``.complete.previous.json`` (written before the first rename), and :func:`check_complete`
  refuses the folder with one line instead of showing new heads beside an old summary; a
  rerun mends it. Files the previous run listed that this run does not write (e.g.
  ``probes.json`` after ``--no-probes``) are removed, never files the analysis did not write.
  Callers hold :func:`folder_lock`, so a ``.staging`` folder or ``*.tmp`` file found at the
  start belongs to a killed run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, TypeVar

import numpy as np

from tinyinterp.atomic import write_json
from tinyinterp.errors import DataError, TinyInterpError
from tinyinterp.output_folder import make_folder

T = TypeVar("T")
R = TypeVar("R", bound="JsonResult")

log = logging.getLogger(__name__)


def jsonable(obj: Any) -> Any:
    """JSON-safe copy of ``obj`` (see the module docstring)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def write_result_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``jsonable(obj)`` to ``path`` atomically; returns the path."""
    path = Path(path)
    write_json(path, jsonable(obj))
    return path


def read_result_json(path: str | os.PathLike, writer: str, default: Any = ...) -> Any:
    """The JSON in ``path``; ``default`` when it is missing and a default is given, else a
    :class:`DataError` naming the file and ``writer`` (what writes it)."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if default is not ...:
            return default
        raise DataError(f"{p}: not found; write it with {writer} or `tinyinterp analyze`") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{p}: invalid JSON ({exc}); re-run the analysis") from None


def parse_result(data: Any, parse: Callable[[Any], T], path: str | os.PathLike, writer: str) -> T:
    """``parse(data)``; JSON of the wrong shape (``parse`` raises KeyError, TypeError, ValueError or
    AttributeError) is a :class:`DataError` naming ``path`` and ``writer``."""
    try:
        return parse(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: not what {writer} writes ({type(exc).__name__}: {exc}); re-run the analysis") from None


def read_result(path: str | os.PathLike, writer: str, parse: Callable[[Any], T]) -> T:
    """``parse`` of the JSON in ``path`` (:func:`read_result_json`, then :func:`parse_result`)."""
    return parse_result(read_result_json(path, writer), parse, path, writer)


class JsonResult:
    """A result kept in one JSON file of a folder: ``save(folder)`` writes ``FILE``, ``load(folder)`` reads it.

    Subclasses name the file (``FILE``) and convert to and from its JSON (:meth:`to_json_obj`,
    :meth:`from_json_obj`). Results with several files (heads, neurons) write each with
    :func:`write_result_json` and read them with :func:`read_result_json` the same way.
    """

    FILE: ClassVar[str]

    def to_json_obj(self) -> Any:
        raise NotImplementedError

    @classmethod
    def from_json_obj(cls: type[R], data: Any) -> R:
        raise NotImplementedError

    def save(self, out: str | os.PathLike) -> Path:
        """Write :attr:`FILE` (atomically) into the folder ``out``; returns the folder."""
        out = Path(out)
        write_result_json(out / self.FILE, self.to_json_obj())
        return out

    @classmethod
    def load(cls: type[R], out: str | os.PathLike) -> R:
        """Read :attr:`FILE` from a folder written by :meth:`save`."""
        return read_result(Path(out) / cls.FILE, f"{cls.__name__}.save(folder)", cls.from_json_obj)


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Create ``out`` (:func:`tinyinterp.output_folder.make_folder`) and refuse to run when another
    analysis is writing it; a folder this call created is removed again when the analysis fails
    before writing anything into it."""
    created = make_folder(out, "analysis")  # one-line errors for a file in the way, permissions, mkdir
    fh = open(out / ".lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise TinyInterpError(f"{out}: another analysis is writing this folder; wait for it or choose another --out") from None
    try:
        yield
    except BaseException:
        if created and [p.name for p in out.iterdir()] == [".lock"]:  # e.g. a bad corpus: leave no empty folder
            (out / ".lock").unlink()
            out.rmdir()
        raise
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


COMPLETE = "complete.json"
STAGING = ".staging"
COMPLETE_FORMAT = 1
PREVIOUS = ".complete.previous.json"  # the last complete run's marker while a commit is under way


def _digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_stale(out: Path) -> list[str]:
    """Remove a killed run's ``.staging`` folder and atomic-write temporaries (``.*.tmp``) from ``out``."""
    removed = []
    if (out / STAGING).is_dir():
        shutil.rmtree(out / STAGING)
        removed.append(STAGING)
    for p in out.glob(".*.tmp"):
        if p.is_file():
            p.unlink()
            removed.append(p.name)
    if removed:
        log.info("%s: removed what a killed run left (%s)", out, ", ".join(sorted(removed)))
    return removed


def read_manifest(folder: str | os.PathLike, name: str = COMPLETE) -> dict[str, Any] | None:
    """``complete.json`` of ``folder`` (``None`` when absent); raises with one line when unreadable."""
    p = Path(folder) / name
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TinyInterpError(f"{p}: unreadable ({exc}); rerun `tinyinterp analyze` into {folder}") from None
    if not isinstance(m, dict) or m.get("format") != COMPLETE_FORMAT or not isinstance(m.get("files"), dict):
        raise TinyInterpError(f"{p}: not a completion marker this tinyinterp reads; rerun `tinyinterp analyze` into {folder}")
    return m


def commit(stage: Path, out: Path, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Move every file of ``stage`` into ``out``; then write ``out/complete.json`` (returned)."""
    names = sorted(p.name for p in stage.iterdir())
    bad = [n for n in names if not (stage / n).is_file()]
    if bad:
        raise TinyInterpError(f"{stage}: {bad[0]} is not a file; results folders hold files only")
    files = {n: _digest(stage / n) for n in names}
    if (out / COMPLETE).exists():  # keep the last complete run's list (its files may be removed below) until done
        os.replace(out / COMPLETE, out / PREVIOUS)
    elif not (out / PREVIOUS).exists():  # PREVIOUS present = a swap under way (or killed): readers refuse the folder
        write_json(out / PREVIOUS, {"format": COMPLETE_FORMAT, "files": {}})
    _fsync_dir(out)  # the marker is gone before any result file changes
    old = read_manifest(out, PREVIOUS)
    for n in names:
        os.replace(stage / n, out / n)
    for n in sorted(set(old["files"]) - set(files)) if old else ():  # the previous run's, not written this time
        if "/" not in n and n not in (COMPLETE, PREVIOUS, ".lock"):
            (out / n).unlink(missing_ok=True)
    _fsync_dir(out)
    manifest = {"format": COMPLETE_FORMAT, "files": files, **(info or {})}
    write_json(out / COMPLETE, manifest)
    (out / PREVIOUS).unlink(missing_ok=True)
    return manifest


@contextmanager
def staged_results(out: str | os.PathLike, info: dict[str, Any] | None = None) -> Iterator[Path]:
    """Yield ``out/.staging`` to write results into; on success :func:`commit` them into ``out``.

    On an error (or a kill) ``out`` keeps what it held; the staging folder is removed here or by the next run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    stage = out / STAGING
    stage.mkdir()
    try:
        yield stage
        commit(stage, out, info)
    finally:
        if stage.exists():
            shutil.rmtree(stage)


def check_complete(folder: str | os.PathLike, verify: bool = True, legacy_ok: bool = False) -> dict[str, Any] | None:
    """The manifest of a complete results folder; one-line :class:`TinyInterpError` otherwise.

    Refuses a folder whose results were being moved in when the run died (``.complete.previous.json``
    left), one without ``complete.json`` (a run was killed, or the folder predates the marker; with
    ``legacy_ok`` such a folder is accepted and ``None`` returned), and, with ``verify``, one whose
    listed files are missing or differ in size or sha256 (files of two runs side by side)."""
    folder = Path(folder)
    if (folder / PREVIOUS).exists():
        raise TinyInterpError(f"{folder}: an analysis was killed while moving its results in (old and new files mixed); "
                              f"rerun `tinyinterp analyze ... --out {folder}`")
    m = read_manifest(folder)
    if m is None and legacy_ok:
        return None
    if m is None:
        raise TinyInterpError(f"{folder}: no {COMPLETE} (the analysis that wrote it was killed or is still running); "
                              f"rerun `tinyinterp analyze ... --out {folder}`")
    for name, want in m["files"].items():
        p = folder / name
        if not p.is_file():
            raise TinyInterpError(f"{p}: listed in {COMPLETE} but missing; rerun `tinyinterp analyze ... --out {folder}`")
        if verify and (p.stat().st_size != want.get("bytes") or _digest(p)["sha256"] != want.get("sha256")):
            raise TinyInterpError(f"{p}: not the file the analysis wrote (changed since); "
                                  f"rerun `tinyinterp analyze ... --out {folder}`")
    return m
