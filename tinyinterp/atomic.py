"""Atomic file writes: write to a temporary file beside the target, fsync, rename.

A reader (or a crash) never sees a half-written file: it sees the old file or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _temp_beside(target.parent, target.name)
    try:
        yield tmp_path
        _seal(tmp_path)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_files(folder: str | os.PathLike) -> Iterator[Callable[[str], Path]]:
    """Replace several files in ``folder`` together: all of them, or (on any error) none.

    Yields ``stage(name) -> Path``, a temporary path to write ``folder/name`` to. When the
    block ends without error every staged file is fsynced first, then each is renamed onto
    its target in staging order (stage a manifest last). Renames need no disk space, so a
    full disk (or any error while writing) leaves every old file as it was; the temporary
    files (and the folders this call created, when left empty) are removed.
    """
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}

    def stage(name: str) -> Path:
        if name not in staged:
            staged[name] = _temp_beside(folder, name)
        return staged[name]

    try:
        yield stage
        for tmp in staged.values():
            _seal(tmp)
        for name, tmp in staged.items():
            os.replace(tmp, folder / name)
    finally:
        for tmp in staged.values():
            if tmp.exists():
                tmp.unlink()
        for p in created:  # failed before any file was renamed in: leave no empty folders behind
            if not p.is_dir() or any(p.iterdir()):
                break
            p.rmdir()


TEMP_SUFFIX = ".tinyinterp.tmp"


def _temp_beside(folder: Path, name: str) -> Path:
    """An empty temporary file in ``folder`` (same filesystem as the target, so a rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=folder)
    os.close(fd)
    return Path(tmp)


def _seal(tmp: Path) -> None:
    """fsync a written temporary file and give it the usual permissions (mkstemp creates 0600)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o666 & ~umask())


def umask() -> int:
    """The process umask (read without changing it for longer than an instant)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (hidden, ending in ``.tinyinterp.tmp``).

    Only call this while holding the folder's lock: a live writer's temporary files look the same."""
    stale = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def replace_dir(tmp_dir: Path, target: Path) -> None:
    """Swap a fully written directory ``tmp_dir`` into place at ``target``.

    The old directory is first renamed to ``<target>.old``, so at every instant
    either ``target`` or ``<target>.old`` is a complete copy; see :func:`recover_dir`.
    """
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp_dir, target)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(target: Path) -> Path | None:
    """Return the complete copy of a directory written by :func:`replace_dir`, if any."""
    if target.exists():
        return target
    old = target.with_name(target.name + ".old")
    return old if old.exists() else None
