"""User-facing errors.

Every mistake a user can make (a wrong path, a corrupt file, a bad hyper-parameter)
raises :class:`TinyInterpError` with a one-line message that names the file or
field and says how to fix it. The CLI prints that line and exits non-zero; only
``--debug`` shows a traceback.
"""

from __future__ import annotations


class TinyInterpError(Exception):
    """A problem with the user's input, reported as one actionable line."""


class CheckpointError(TinyInterpError):
    """A checkpoint directory is missing, incomplete, corrupt or inconsistent."""


class DataError(TinyInterpError):
    """A corpus or tokenizer input cannot be used."""


class ConfigError(TinyInterpError):
    """A configuration field has an invalid value."""
