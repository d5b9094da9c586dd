"""Load an SAE folder in SAELens' on-disk format, checked against the model it will be used with.

Any SAELens SAE folder works (``cfg.json`` + ``sae_weights.safetensors``): ours, or one a
user trained with SAELens on one of our checkpoints. Mistakes (a missing or corrupt file, an
SAE for another model or hook, a width that does not match the hook) raise
:class:`~tinyinterp.errors.CheckpointError` in one line.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from tinyinterp.errors import CheckpointError

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"


def read_sae_config(path: str | os.PathLike) -> dict:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise CheckpointError(f"{p}: no such SAE folder (expected a folder holding {CFG} and {WEIGHTS})")
    for name in (CFG, WEIGHTS):
        if not (p / name).is_file():
            raise CheckpointError(f"{p / name}: missing; an SAE folder in SAELens' format holds {CFG} and {WEIGHTS}")
    try:
        cfg = json.loads((p / CFG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p / CFG}: not valid JSON ({exc}); restore the file or retrain the SAE") from None
    if not isinstance(cfg, dict) or not {"architecture", "d_in", "d_sae"} <= set(cfg):
        raise CheckpointError(f"{p / CFG}: not an SAELens SAE config (needs architecture, d_in, d_sae)")
    return cfg


def _check_weights(path: Path, cfg: dict) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path / WEIGHTS), framework="pt") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
        raise CheckpointError(f"{path / WEIGHTS}: unreadable safetensors file ({type(exc).__name__}); "
                              "restore it or retrain the SAE") from None
    want = {"W_enc": (cfg["d_in"], cfg["d_sae"]), "W_dec": (cfg["d_sae"], cfg["d_in"])}
    for name, shape in want.items():
        if shapes.get(name) != shape:
            raise CheckpointError(f"{path / WEIGHTS}: {name} has shape {shapes.get(name)}, but {CFG} says {shape} "
                                  "(d_in, d_sae); the weights and config do not belong together")


def check_sae_fits(cfg: dict, model, where: str, hook: str | None = None) -> str:
    """Raise unless the SAE config ``cfg`` fits ``model`` (and ``hook``); return the hook name."""
    from tinyinterp.sae.train import hook_dim

    meta = cfg.get("metadata") or {}
    sae_hook = meta.get("hook_name") or cfg.get("hook_name")
    if hook is not None and sae_hook is not None and sae_hook != hook:
        raise CheckpointError(f"{where}: this SAE was trained on {sae_hook!r}, not {hook!r}; load the SAE for {hook}")
    hook = hook or sae_hook
    if hook is None:
        raise CheckpointError(f"{where}: {CFG} does not say which hook the SAE reads; pass hook=... (--hook)")
    name = meta.get("model_name")
    if name is not None and name != model.cfg.model_name:
        raise CheckpointError(f"{where}: this SAE was trained on model {name!r}, not {model.cfg.model_name!r}; "
                              "load an SAE trained on this checkpoint (or set metadata.model_name in cfg.json if it was)")
    width = hook_dim(model, hook)
    if width != cfg["d_in"]:
        raise CheckpointError(f"{where}: SAE d_in={cfg['d_in']} but {hook} of {model.cfg.model_name} has width {width}; "
                              "this SAE belongs to another model or hook")
    return hook


def load_sae(path: str | os.PathLike, model=None, hook: str | None = None, device: str = "cpu"):
    """Load an SAE folder as a float32 ``sae_lens.SAE``; with ``model``, check it fits (model, hook, width)."""
    from sae_lens import SAE

    p = Path(path).expanduser()
    cfg = read_sae_config(p)
    _check_weights(p, cfg)
    if model is not None:
        check_sae_fits(cfg, model, str(p), hook)
    try:
        with warnings.catch_warnings():  # SAELens advises HookedSAETransformer for its own model kwargs; not ours
            warnings.filterwarnings("ignore", message=".*model_from_pretrained_kwargs")
            sae = SAE.load_from_disk(str(p), device=device, dtype="float32")
    except Exception as exc:  # noqa: BLE001 - SAELens raises many kinds for an inconsistent folder
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"{p}: SAELens could not load this SAE ({type(exc).__name__}: {msg})") from None
    return sae.eval()
