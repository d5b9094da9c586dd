"""Building and checking ``HookedTransformer``\\ s from a :class:`ModelConfig`.

The checks run in order of cost: the config's fields (:class:`ModelConfig`), the memory its
shape needs, the safetensors *header* (names, shapes, dtypes, sizes; no tensor data is read)
against :meth:`ModelConfig.weight_shapes`, and only then the weights themselves: finite
parameters, and buffers (the causal ``attn.mask``, ``attn.IGNORE = -inf``) equal to what the
config implies, so an edited buffer cannot let the model see future tokens.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tinyinterp.errors import CheckpointError, ConfigError
from tinyinterp.models.config import ModelConfig

FLOAT_DTYPES = {torch.float32, torch.float16, torch.bfloat16}
# safetensors dtype codes and their sizes in bytes
ST_DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit


def model_config(cfg: ModelConfig | dict[str, Any], where: str | os.PathLike = "config.json") -> ModelConfig:
    """``cfg`` as a validated :class:`ModelConfig`; a bad field is a :class:`CheckpointError` naming ``where``."""
    if isinstance(cfg, ModelConfig):
        return cfg
    try:
        return ModelConfig.from_dict(cfg)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}; restore the file from the original model") from None


def hooked_config(cfg: ModelConfig | dict[str, Any], where: str | os.PathLike = "config.json"):
    """The ``HookedTransformerConfig`` of a model config (validated first)."""
    from transformer_lens import HookedTransformerConfig

    mc = model_config(cfg, where)
    try:
        return HookedTransformerConfig(**mc.to_dict())
    except Exception as exc:  # noqa: BLE001 - TransformerLens' own consistency checks
        raise CheckpointError(f"{where}: invalid HookedTransformer config ({type(exc).__name__}: {exc})") from None


def hooked_buffers(cfg: ModelConfig | dict[str, Any]) -> dict[str, Tensor]:
    """The non-parameter state (causal masks, ``IGNORE``) a fresh ``HookedTransformer`` of ``cfg`` has."""
    from transformer_lens import HookedTransformer

    model = HookedTransformer(hooked_config(cfg), move_to_device=False)
    params = {n for n, _ in model.named_parameters()}
    return {k: v for k, v in model.state_dict().items() if k not in params}


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensor entries of a safetensors file's JSON header (no tensor data is read)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 < n <= min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file (header length {n}); re-save or re-download it")
        try:
            header = json.loads(fh.read(n))
        except (ValueError, RecursionError):
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file (header is not JSON); re-save or re-download it") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors file (header is not an object); re-save or re-download it")
    header.pop("__metadata__", None)
    for k, v in header.items():
        ok = isinstance(v, dict) and v.get("dtype") in ST_DTYPES and isinstance(v.get("shape"), list) \
            and all(isinstance(d, int) and d >= 0 for d in v["shape"]) and isinstance(v.get("data_offsets"), list) \
            and len(v["data_offsets"]) == 2 and all(isinstance(o, int) for o in v["data_offsets"])
        if not ok:
            raise CheckpointError(f"{path}: corrupt safetensors header entry {k!r}; re-save or re-download it")
        length = v["data_offsets"][1] - v["data_offsets"][0]
        if length != math.prod(v["shape"]) * ST_DTYPES[v["dtype"]] or v["data_offsets"][1] > size - 8 - n:
            raise CheckpointError(f"{path}: {k} has {length} bytes for shape {tuple(v['shape'])} {v['dtype']}, or lies "
                                  "beyond the end of the file; the file is corrupt or truncated; re-save or re-download it")
    return header


def check_header(path: Path, cfg: ModelConfig) -> None:
    """Names and shapes in ``path``'s header must be what ``cfg`` implies; checked before any allocation."""
    cfg.check_fits_memory(str(path.with_name("config.json")))
    header = read_header(path)
    got = {k: tuple(v["shape"]) for k, v in header.items()}
    check_names_and_shapes(got, cfg.weight_shapes(), path)


def check_names_and_shapes(got: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], where: Path) -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{where}: weights do not match config.json (missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
            f"unexpected {extra[:3]}{'…' if len(extra) > 3 else ''}); the config and weights come from different models"
        )
    for k, shape in expected.items():
        if tuple(got[k]) != tuple(shape):
            raise CheckpointError(f"{where}: {k} has shape {tuple(got[k])} but config.json implies {tuple(shape)}; "
                                  "config and weights disagree")


def check_weights(sd: dict[str, Tensor], expected: dict[str, Tensor], where: Path, params: set[str] | None = None) -> None:
    """Names, shapes, dtypes; parameters must be finite; buffers must equal the freshly built model's."""
    check_names_and_shapes({k: tuple(v.shape) for k, v in sd.items()},
                           {k: tuple(v.shape) for k, v in expected.items()}, where)
    for k, ref in expected.items():
        v = sd[k]
        if ref.is_floating_point():
            if v.dtype not in FLOAT_DTYPES:
                raise CheckpointError(f"{where}: {k} has dtype {v.dtype}; expected float32/float16/bfloat16")
        elif v.dtype != ref.dtype:
            raise CheckpointError(f"{where}: {k} has dtype {v.dtype}; expected {ref.dtype}")
        if params is not None and k not in params:
            if not torch.equal(v.to(ref.dtype), ref):
                raise CheckpointError(f"{where}: buffer {k} differs from what config.json implies (the causal mask and "
                                      "IGNORE=-inf are fixed by the shape); the file was edited; restore it")
        elif ref.is_floating_point() and v.numel() and not torch.isfinite(v).all():
            raise CheckpointError(f"{where}: {k} contains NaN or inf; the checkpoint is broken (training diverged?)")
