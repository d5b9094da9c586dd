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


def check_fields(cls, d: dict, what: str = "") -> None:
    """Raise :class:`ConfigError` naming the fields of ``d`` that the dataclass ``cls`` does not have.

    ``what`` names the file or config at the start of the message (e.g. ``"training config"``);
    callers that prefix the file name themselves leave it empty.
    """
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{what + ': ' if what else ''}unknown field(s) {unknown[:5]}; remove them "
                          f"(known: {', '.join(sorted(known))})")
