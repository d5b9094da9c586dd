"""Where derived files (trained tokenizers, pre-tokenised shards, POS tags) are cached.

``$TINYINTERP_CACHE`` if set, else ``~/.cache/tinyinterp``. Entries are keyed by content
hashes, so a stale entry is never reused and deleting the folder is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(sub: str = "") -> Path:
    root = Path(os.environ.get("TINYINTERP_CACHE") or Path.home() / ".cache" / "tinyinterp").expanduser()
    p = root / sub if sub else root
    p.mkdir(parents=True, exist_ok=True)
    return p
