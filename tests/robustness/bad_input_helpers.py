"""Helpers for the bad-input suite: run the CLI, check its one error line, snapshot folders."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from tinyinterp.cli.main import main

# a progress bar's last state (tqdm) or the trainer's evaluation line: not part of an error report
_PROGRESS = re.compile(r"^(\w[\w ]*: *\d+%\||\w[\w ]*: \d+ \w|step \d+: val loss)")


def cli(capsys, *args) -> tuple[int, str]:
    """Run ``tinyinterp ARGS`` in-process; return (exit status, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def error_line(rc: int, err: str, *patterns: str, progress: bool = False) -> str:
    """Assert a user error: status 2, no traceback, stderr exactly one ``error: …`` line matching
    every pattern. ``progress``: the command got as far as showing progress bars, whose final
    states are allowed on their own lines before the error."""
    assert "Traceback" not in err, err
    lines = [ln.split("\r")[-1].strip() for ln in err.split("\n")]  # a cleared bar leaves "\r…\r" before the text
    lines = [ln for ln in lines if ln and not (progress and _PROGRESS.match(ln))]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for p in patterns:
        assert re.search(p, lines[0]), f"{p!r} not in {lines[0]!r}"
    return lines[0]


def tree(root: Path) -> dict[str, str]:
    """Every file (sha256) and folder under ``root``, hidden ones included, by relative path."""
    root = Path(root)
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():  # never followed: a link to /dev/zero would never end
            out[rel] = "<link> " + os.readlink(p)
        elif not (p.is_dir() or p.is_file()):
            out[rel] = "<special>"  # a FIFO would block
        else:
            out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def copy_ckpt(src: Path, dst: Path, run: bool = False) -> Path:
    """A private copy of a checkpoint; ``run``: with its resume state and snapshots."""
    ignore = None if run else shutil.ignore_patterns("resume", "resume.old", "snapshots", "metrics.jsonl")
    shutil.copytree(src, dst, ignore=ignore)
    return dst


def edit_config(ckpt: Path, **fields) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(fields)
    (ckpt / "config.json").write_text(json.dumps(cfg))


class PickleTrap:
    """Unpickling this creates ``path``: proof that a pickle was executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
