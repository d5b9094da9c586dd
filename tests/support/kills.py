"""Simulated kills for the crash-safety tests."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import pytest


@contextmanager
def killed_at_rename(name: str) -> Iterator[None]:
    """The block dies (``SystemExit``) when ``os.replace`` is about to move a file called ``name`` into place:
    a process killed between two renames. Earlier renames happen; the block must die."""
    real = os.replace

    def dying(src, dst):
        if os.path.basename(dst) == name:
            raise SystemExit("killed")
        real(src, dst)

    os.replace = dying
    try:
        with pytest.raises(SystemExit):
            yield
    finally:
        os.replace = real
