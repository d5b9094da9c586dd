"""Text normalisation: repair mojibake, normalise newlines, strip."""

from __future__ import annotations

import re

import ftfy

_MOJIBAKE_HINTS = ("â€", "Ã", "Â", "\ufffd")
_TRAILING_WS = re.compile(r"[ \t]+\n")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def normalize_story(text: str) -> str:
    """Fix mojibake such as ``â€œ`` with ftfy, unify newlines, strip outer whitespace.

    ftfy is only run when the text shows a mojibake hint, which keeps clean text
    (almost all of TinyStories) byte-identical and fast.
    """
    if any(h in text for h in _MOJIBAKE_HINTS):
        text = ftfy.fix_text(text, normalization="NFC", uncurl_quotes=False)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING_WS.sub("\n", text)
    text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()
