"""The one way analysis results are written and read: a folder of JSON (and CSV) files.

Every result class has ``save(folder) -> folder`` and ``load(folder)``; the files of each
are listed in its docstring. They all go through this module:

* :func:`jsonable` — the one JSON sanitiser: NaN/inf become ``null``, numpy scalars and
  arrays become Python numbers and lists, tuples become lists, anything else that JSON
  cannot hold (paths, enums) becomes its ``str``;
* :func:`write_result_json` / :func:`read_result_json` — atomic write of a sanitised object;
  read with a one-line error naming the file and the fix;
* :func:`folder_lock` — only one analysis writes a folder at a time (an advisory lock,
  ``.lock``), and a folder that a failed analysis created is removed again.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tinyinterp.atomic import write_json
from tinyinterp.errors import DataError, TinyInterpError


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


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Refuse to run when another analysis is writing ``out``; a folder this call created is
    removed again when the analysis fails before writing anything into it."""
    if out.exists() and not out.is_dir():
        raise TinyInterpError(f"{out}: is a file, not a folder; pass --out a folder (new or from an earlier analysis)")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TinyInterpError(f"{out}: cannot create the output folder ({exc.strerror}); choose another --out") from None
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
