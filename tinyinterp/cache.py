"""Where derived files (trained tokenizers, pre-tokenised shards, POS tags) are cached.

``$TINYINTERP_CACHE`` if set, else ``~/.cache/tinyinterp``. Entries are keyed by content
hashes, so a stale entry is never reused and deleting the folder is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path

from tinyinterp.errors import ConfigError


def cache_dir(sub: str = "") -> Path:
    root = Path(os.environ.get("TINYINTERP_CACHE") or Path.home() / ".cache" / "tinyinterp").expanduser()
    p = root / sub if sub else root
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cache folder {p} (TINYINTERP_CACHE): cannot create it ({exc.strerror}); point "
                          "TINYINTERP_CACHE at a writable folder or unset it") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"cache folder {p} (TINYINTERP_CACHE): not writable; point TINYINTERP_CACHE at a "
                          "writable folder or unset it")
    return p
