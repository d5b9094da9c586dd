"""Which checkpoints the explorer can show, and what their folders say (no Streamlit here).

A checkpoint is a folder with ``config.json`` and ``model.safetensors`` (see
``docs/checkpoint-format.md``), or a Hugging Face GPT-Neo/GPT-2 folder (``pytorch_model.bin``
weights allowed; see ``docs/interop.md``). The picker lists every such folder directly under the
checkpoints root (``$TINYINTERP_EXPLORER_ROOT`` or the repository's ``checkpoints/``) plus any
path given on the command line (``$TINYINTERP_EXPLORER_CKPT``, ``os.pathsep``-separated).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
ROOT_ENV = "TINYINTERP_EXPLORER_ROOT"
CKPT_ENV = "TINYINTERP_EXPLORER_CKPT"
REQUIRED = ("config.json", "model.safetensors")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the second only in Hugging Face folders
# Files whose change changes what the explorer shows for a checkpoint (cache keys use them).
DEFINING = ("config.json", *WEIGHT_FILES, "tokenizer.json", "training.json", "metrics.jsonl", "manifest.json")


@dataclass(frozen=True)
class CheckpointEntry:
    """One choice of the model picker."""

    path: Path
    source: str  # "bundled" (under the root) or "command line"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def label(self) -> str:
        return self.name if self.source == "bundled" else f"{self.name} ({self.path})"


def checkpoints_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or REPO / "checkpoints").expanduser()


def command_line_paths() -> list[str]:
    raw = os.environ.get(CKPT_ENV, "")
    return [p for p in raw.split(os.pathsep) if p.strip()]


def weights_file(path: Path) -> Path | None:
    return next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)


def is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and weights_file(path) is not None


def problem(path: str | os.PathLike) -> str | None:
    """A one-line, friendly reason why ``path`` is not a usable checkpoint (None when it is)."""
    p = Path(path).expanduser()
    if not str(path).strip():
        return "no checkpoint path given"
    if not p.exists():
        return f"`{p}` does not exist. Pick a model in the sidebar, or pass a checkpoint folder: `tinyinterp explore PATH`."
    if not p.is_dir():
        return f"`{p}` is a file; a checkpoint is a folder holding {' and '.join(REQUIRED)}."
    missing = [f for f in REQUIRED if not (p / f).is_file()]
    if missing == ["model.safetensors"] and weights_file(p) is not None:
        missing = []
    if missing:
        return f"`{p}` is not a tinyinterp checkpoint: it lacks {', '.join(missing)} (see docs/checkpoint-format.md)."
    return None


def list_checkpoints(root: Path | None = None, extra: list[str] | None = None) -> list[CheckpointEntry]:
    """Command-line paths first (even broken ones, so the page can explain), then bundled ones by name."""
    root = checkpoints_root() if root is None else root
    out: list[CheckpointEntry] = []
    seen: set[Path] = set()
    for raw in command_line_paths() if extra is None else extra:
        p = Path(raw).expanduser().resolve()
        if p not in seen:
            seen.add(p)
            out.append(CheckpointEntry(p, "command line"))
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if is_checkpoint(p) and p.resolve() not in seen:
                seen.add(p.resolve())
                out.append(CheckpointEntry(p.resolve(), "bundled"))
    return out


def find_entry(entries: list[CheckpointEntry], wanted: str) -> CheckpointEntry | None:
    """The picker entry a link names: by name (``ts-1l``) or by folder path."""
    by_name = next((e for e in entries if e.name == wanted), None)
    if by_name is not None:
        return by_name
    path = Path(wanted).expanduser()
    if not path.is_absolute():
        return None
    return next((e for e in entries if e.path == path.resolve()), None)


def fingerprint(path: Path, names: tuple[str, ...] = DEFINING) -> str:
    """Short hash of the size and mtime of ``names`` in ``path``: changes whenever they change."""
    h = hashlib.sha256(str(path.resolve()).encode())
    for name in names:
        f = path / name
        if f.is_file():
            st = f.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def content_key(path: Path) -> str:
    """Hash of the checkpoint's content (its manifest of sha256s when present): names on-disk caches."""
    manifest = path / "manifest.json"
    if manifest.is_file():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    h = hashlib.sha256((path / "config.json").read_bytes())
    weights = weights_file(path)
    h.update(str(weights.stat().st_size if weights else 0).encode())
    return h.hexdigest()[:16]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def read_card(path: Path) -> dict[str, Any]:
    """Shape, size, data and evaluation of a checkpoint from its JSON files (the model is not loaded)."""
    cfg = _read_json(path / "config.json")
    if "model_type" in cfg:  # a Hugging Face folder: its shape in HookedTransformer's names
        from tinyinterp.errors import TinyInterpError
        from tinyinterp.models.hf_import import hooked_config_from_hf

        try:
            cfg = hooked_config_from_hf(cfg, path)
        except TinyInterpError:
            cfg = {}
    info = _read_json(path / "training.json")
    shape = {k: cfg.get(k) for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "act_fn")}
    data = info.get("data") or {}
    splits = data.get("splits") or {}
    sources = data.get("sources") or {}
    files = [Path(s.get("path", "?")).name for s in sources.get("train", []) if isinstance(s, dict)]
    final = info.get("final_eval") or {}
    return {
        "name": path.name,
        "path": str(path),
        "shape": shape,
        "preset": (info.get("config") or {}).get("preset"),
        "n_params": info.get("n_params"),
        "steps": info.get("step"),
        "tokens_seen": info.get("tokens_seen"),
        "wall_s": info.get("wall_s"),
        "val_bpb": final.get("val_bpb"),
        "val_loss": final.get("val_loss"),
        "val_tokens": final.get("val_tokens"),
        "train_files": files,
        "splits": {k: {kk: v.get(kk) for kk in ("stories", "tokens", "bytes")} for k, v in splits.items() if isinstance(v, dict)},
        "samples": info.get("samples") or [],
        "command": info.get("command"),
    }


def read_metrics(path: Path) -> pd.DataFrame:
    """``metrics.jsonl`` as a frame (one row per logged step or evaluation); empty when absent."""
    f = path / "metrics.jsonl"
    rows = []
    if f.is_file():
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # a torn last line of a run that is still writing
            if isinstance(obj, dict) and "step" in obj:
                rows.append(obj)
    return pd.DataFrame(rows)


def list_snapshots(path: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete snapshot in ``snapshots/``, by step."""
    d = path / "snapshots"
    out = []
    if d.is_dir():
        for p in d.iterdir():
            if p.name.startswith("step_") and is_checkpoint(p):
                try:
                    out.append((int(p.name[5:]), p))
                except ValueError:
                    continue
    return sorted(out)


def card_readme(path: Path) -> str:
    f = path / "README.md"
    return f.read_text(encoding="utf-8") if f.is_file() else ""
