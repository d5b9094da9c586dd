"""Checkpoint format, saving and strict loading.

A checkpoint is a directory::

    config.json        HookedTransformerConfig fields (plain JSON)
    model.safetensors  HookedTransformer state dict (fp32, or fp16 when saved compact)
    tokenizer.json …   the tokenizer (loads with PreTrainedTokenizerFast.from_pretrained)
    training.json      metrics summary, data provenance with hashes, versions, wall time
    manifest.json      sha256 of every file above, verified on load
    README.md          generated model card

Loading is strict and bounded: only regular files inside the folder are read (size-capped
JSON); ``config.json`` becomes a validated :class:`~tinyinterp.models.config.ModelConfig`; the
safetensors header is compared with the shapes it implies before anything is allocated; then
dtypes, finite parameters and buffers (``IGNORE = -inf``). Unknown config fields, missing or
extra weights, a truncated file, a tokenizer that does not fit ``d_vocab``, a save that was
killed between its renames – each raises :class:`~tinyinterp.errors.CheckpointError` with one
line naming the file and the fix (docs/checkpoint-format.md lists them). Weights are only ever
read with safetensors; nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tinyinterp.atomic import write_json
from tinyinterp.device import check_device
from tinyinterp.errors import CheckpointError
from tinyinterp.hashing import sha256_file
from tinyinterp.models.hooked import check_header, check_weights, hooked_config, model_config
from tinyinterp.safe_files import check_regular, member, read_json

log = logging.getLogger(__name__)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAINING = "training.json"
MANIFEST = "manifest.json"
CARD = "README.md"
# present only while a save renames its files into place: a kill there leaves files of two steps
SAVING = ".save-in-progress"
MAX_CONFIG_BYTES = 1 << 20


# files that define the model (weights, config, tokenizer, provenance), not logs or cards
DEFINING_FILES = {CONFIG, WEIGHTS, TRAINING, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "vocab.json", "merges.txt", "tokenizer.model"}


def _defining_files(ckpt: Path) -> list[str]:
    """Files that define the model (weights, config, tokenizer, provenance), not logs or cards."""
    return sorted(f.name for f in ckpt.iterdir() if f.is_file() and f.name in DEFINING_FILES)


def write_manifest(ckpt: Path) -> None:
    files = _defining_files(ckpt)
    write_json(ckpt / MANIFEST, {"sha256": {name: sha256_file(ckpt / name) for name in files}})


def verify_manifest(ckpt: Path) -> None:
    """Every file ``manifest.json`` lists (plain names of regular files inside ``ckpt``) has its sha256."""
    mp = member(ckpt, MANIFEST, CheckpointError)
    if not mp.exists():
        log.warning("%s: no %s; skipping checksum verification", ckpt, MANIFEST)
        return
    fix = "re-save the checkpoint or load with --no-verify"
    try:
        sums = read_json(mp, CheckpointError, fix, max_bytes=MAX_CONFIG_BYTES)
    except CheckpointError as exc:
        raise CheckpointError(f"{mp}: unreadable manifest ({str(exc).split(': ', 1)[-1].split(';')[0]}); {fix}") from None
    sums = sums.get("sha256") if isinstance(sums, dict) else None
    if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
        raise CheckpointError(f"{mp}: unreadable manifest (expected {{\"sha256\": {{file: hex digest}}}}); {fix}")
    for name, digest in sums.items():
        f = member(ckpt, name, CheckpointError, f"{MANIFEST} entry")
        if not f.exists():
            raise CheckpointError(f"{f}: listed in {MANIFEST} but missing; restore it or load with --no-verify")
        if sha256_file(f) != digest:
            if (ckpt / SAVING).exists():
                raise CheckpointError(f"{ckpt}: a save was interrupted while renaming its files (they come from two "
                                      "steps); rerun the training with --resume to rewrite it from the last saved state")
            raise CheckpointError(
                f"{f}: sha256 does not match {MANIFEST} (file changed or corrupted); restore it or load with --no-verify"
            )


def save_checkpoint(
    out: str | os.PathLike,
    config: dict[str, Any],
    state_dict: dict[str, Tensor],
    tokenizer_dir: str | os.PathLike | None = None,
    training: dict[str, Any] | None = None,
    card: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a checkpoint directory, all files or none.

    Every file goes to a temporary file first; only when all are on disk are they renamed into
    place (manifest last). An error while writing (a full disk) leaves the previous checkpoint
    exactly as it was, still loadable.
    """
    import shutil

    from safetensors.torch import save_file

    from tinyinterp.atomic import atomic_files
    from tinyinterp.data.tokenizer import tokenizer_files

    out = Path(out)
    tensors = {k: (v.to(dtype) if v.is_floating_point() and v.dim() > 0 else v).detach().contiguous().cpu()
               for k, v in state_dict.items()}
    with atomic_files(out) as stage:
        new: dict[str, Path] = {}
        stage(SAVING)  # renamed in first, removed last: its presence says "files of two steps"

        def put(name: str) -> Path:
            new[name] = stage(name)
            return new[name]

        save_file(tensors, str(put(WEIGHTS)), metadata={"format": "pt", "producer": "tinyinterp"})
        put(CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if tokenizer_dir is not None and Path(tokenizer_dir).resolve() != out.resolve():
            for f in tokenizer_files(tokenizer_dir):
                shutil.copyfile(f, put(f.name))
        if training is not None:
            put(TRAINING).write_text(json.dumps(training, indent=2) + "\n", encoding="utf-8")
        if card is not None:
            put(CARD).write_text(card, encoding="utf-8")
        names = sorted(set(_defining_files(out)) | (set(new) & DEFINING_FILES))
        sums = {name: sha256_file(new.get(name, out / name)) for name in names}
        put(MANIFEST).write_text(json.dumps({"sha256": sums}, indent=2) + "\n", encoding="utf-8")
    (out / SAVING).unlink(missing_ok=True)
    return out


def read_config(ckpt: Path) -> dict[str, Any]:
    cp = member(ckpt, CONFIG, CheckpointError)
    if not cp.exists():
        raise CheckpointError(f"{ckpt}: not a tinyinterp checkpoint (no {CONFIG}); pass a folder written by `tinyinterp train`")
    cfg = read_json(cp, CheckpointError, "restore the file from the original checkpoint", max_bytes=MAX_CONFIG_BYTES)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cp}: expected a JSON object of HookedTransformerConfig fields")
    return cfg


def weights_path(ckpt: Path) -> Path:
    """``ckpt``'s safetensors file: a regular file inside the folder, and not a pickle."""
    wp = member(ckpt, WEIGHTS, CheckpointError)
    if not wp.exists():
        pickles = [p.name for p in ckpt.glob("*.bin")] + [p.name for p in ckpt.glob("*.pt")] + [p.name for p in ckpt.glob("*.pth")]
        hint = f" (found {pickles}: pickle files are never loaded; convert them to safetensors)" if pickles else ""
        raise CheckpointError(f"{wp}: missing weights file{hint}")
    check_regular(wp, CheckpointError)
    with open(wp, "rb") as fh:
        head = fh.read(9)  # safetensors: 8-byte header length, then "{"
    if head[8:9] != b"{" and head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save zip / raw pickle
        raise CheckpointError(f"{wp}: is a PyTorch pickle, not safetensors; pickles are never loaded, "
                              "convert it with safetensors.torch.save_file where you trust its origin")
    return wp


def read_weights(ckpt: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    wp = weights_path(ckpt)
    try:
        sd = load_file(str(wp))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{wp}: corrupt or truncated safetensors file ({str(exc).splitlines()[0][:160]}); re-save or re-download it") from None
    return sd


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint folder; list bundled ones with `ls checkpoints/`")
    if p.is_file():
        raise CheckpointError(f"{p}: is a file; pass the checkpoint folder that holds {CONFIG} and {WEIGHTS}")
    return p


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True, with_tokenizer: bool = True):
    """Load a checkpoint folder as a ``HookedTransformer`` (fp32, eval mode) with its tokenizer.

    ``path`` may also be a Hugging Face GPT-Neo/GPT-2 folder (``config.json`` with ``model_type``)
    or ``hf:NAME`` (TransformerLens' official models, online); see :mod:`tinyinterp.models.hf_import`.

    >>> model = load_model("checkpoints/ts-1l")      # doctest: +SKIP
    >>> logits, cache = model.run_with_cache("Once upon a time")  # doctest: +SKIP
    """
    from transformer_lens import HookedTransformer

    from tinyinterp.data.tokenizer import check_tokenizer_fits, load_tokenizer
    from tinyinterp.models import hf_import

    device = check_device(device)
    if hf_import.is_hub_name(path):
        return hf_import.load_hub_model(str(path), device=device, with_tokenizer=with_tokenizer)
    if hf_import.is_hf_dir(path):
        return hf_import.load_hf_dir(path, device=device, with_tokenizer=with_tokenizer)
    ckpt = resolve_checkpoint(path)
    mc = model_config(read_config(ckpt), ckpt / CONFIG)
    if verify:
        verify_manifest(ckpt)
    cfg = hooked_config(mc, ckpt / CONFIG)
    tokenizer = None
    if with_tokenizer:
        try:
            tokenizer = load_tokenizer(ckpt)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{ckpt}: tokenizer missing or unreadable ({exc}); copy the tokenizer files into the checkpoint") from None
        if len(tokenizer) != cfg.d_vocab:
            raise CheckpointError(
                f"{ckpt}: tokenizer has {len(tokenizer)} ids but {CONFIG} says d_vocab={cfg.d_vocab}; use the tokenizer the model was trained with"
            )
        check_tokenizer_fits(tokenizer, cfg.d_vocab, ckpt / "tokenizer.json")
    check_header(weights_path(ckpt), mc)  # before anything of the model's size is allocated
    sd = read_weights(ckpt)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    check_weights(sd, model.state_dict(), ckpt / WEIGHTS, {n for n, _ in model.named_parameters()})
    model.load_state_dict(sd, strict=True)
    if str(device) != "cpu":
        model.to(device, print_details=False)
    model.eval()
    return model


def load_fast_model(path: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True):
    """Load a checkpoint into the fast :class:`TinyTransformer` (for eval/generation/training)."""
    from tinyinterp.models import hf_import
    from tinyinterp.models.convert import from_hooked_state_dict

    device = check_device(device)
    ht = load_model(path, device="cpu", verify=verify)
    foreign = hf_import.is_hub_name(path) or hf_import.is_hf_dir(path)
    cfg = hf_import.fast_config(ht.cfg) if foreign else read_config(Path(path))
    fast = from_hooked_state_dict(cfg, ht.state_dict()).to(device).eval()
    return fast, ht.tokenizer
