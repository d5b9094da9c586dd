"""Resumable training state, written crash-safely.

``<out>/resume/`` holds the fast model's weights, AdamW's moments (safetensors), and
``state.json`` (step, samples consumed, RNG state, the training config, metrics so far).
It is written into a temporary folder and swapped in with :func:`tinyinterp.atomic.replace_dir`,
so a crash at any instant leaves either the previous or the new state complete; a partial
folder is never picked up. Nothing here is pickled.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tinyinterp.atomic import recover_dir, replace_dir, write_json
from tinyinterp.errors import CheckpointError

RESUME = "resume"


def save_state(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".resume-", dir=out))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        opt_tensors: dict[str, torch.Tensor] = {}
        names = {id(p): n for n, p in model.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                for key, val in optimizer.state.get(p, {}).items():
                    opt_tensors[f"{names[id(p)]}::{key}"] = val.detach().contiguous().cpu()
        opt_tensors["__rng_cpu__"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                opt_tensors[f"__rng_cuda{i}__"] = s
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        write_json(tmp / "state.json", state)
        for f in tmp.iterdir():  # make the contents durable before the swap
            with open(f, "rb") as fh:
                import os

                os.fsync(fh.fileno())
        replace_dir(tmp, out / RESUME)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def has_state(out: Path) -> bool:
    return recover_dir(out / RESUME) is not None


def load_state(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and RNG from ``<out>/resume``; return ``state.json``."""
    folder = recover_dir(out / RESUME)
    if folder is None:
        raise CheckpointError(f"{out}: nothing to resume (no {RESUME}/ folder); start without --resume")
    try:
        state = json.loads((folder / "state.json").read_text())
        weights = load_file(str(folder / "model.safetensors"))
        opt = load_file(str(folder / "optimizer.safetensors"))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{folder}: resume state unreadable ({type(exc).__name__}); start again with --overwrite") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln or "Missing" in ln
                       or "Unexpected" in ln), "")[:160]
        raise CheckpointError(f"{folder}: the resume state holds a model of another shape ({detail}); resume with the "
                              "run's original --preset/--model-config, or start again with --overwrite") from None
    params = dict(model.named_parameters())
    for key, val in opt.items():
        if key.startswith("__rng"):
            continue
        name, _, slot = key.partition("::")
        if name not in params:
            raise CheckpointError(f"{folder}: optimizer state for unknown parameter {name}; the model shape changed")
        optimizer.state[params[name]][slot] = val if slot == "step" else val.to(params[name].device)
    torch.set_rng_state(opt["__rng_cpu__"])
    if torch.cuda.is_available():
        cuda = [opt[k] for k in sorted(opt) if k.startswith("__rng_cuda")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    return state
