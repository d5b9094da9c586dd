"""Results folders that readers see whole or not at all: stage, swap in, mark complete.

An analysis writes every result file into ``OUT/.staging/`` (:func:`staged_results`); only
when all of them are written does :func:`commit` move them into ``OUT`` and write
``OUT/complete.json`` last, listing each file with its size and sha256. So:

* a run killed while computing (any rank, any stage) leaves ``OUT`` as it was — the previous
  complete analysis, still readable — plus a ``.staging`` folder the next run removes;
* a run killed during the few renames of :func:`commit` leaves no ``complete.json`` (it is
  removed before the first rename), and :func:`check_complete` refuses the folder with one
  line instead of showing new heads beside an old summary; rerunning mends it;
* files a previous run listed in its ``complete.json`` that this run does not write (e.g.
  ``probes.json`` after ``--no-probes``) are removed, never files the analysis did not write.

Callers hold the folder lock (:func:`tinyinterp.analysis.pipeline.folder_lock`), so any
``.staging`` folder or ``*.tmp`` file found at the start belongs to a killed run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tinyinterp.errors import TinyInterpError

log = logging.getLogger(__name__)
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
    from tinyinterp.atomic import write_json

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
