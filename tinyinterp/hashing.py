"""The sha256 helpers: of a file (streamed) and of a JSON-able value (canonical form)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of ``obj`` as JSON with sorted keys (the same value always gives the same hash)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
