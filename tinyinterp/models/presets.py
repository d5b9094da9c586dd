"""Model shapes. Each preset is a set of ``HookedTransformerConfig`` fields.

The ``ts-*`` presets mirror the released TinyStories models (Eldan & Li 2023; all 16 heads,
``d_mlp = 4 * d_model``). Differences from the released GPT-Neo checkpoints, on purpose:

* attention scores are scaled by ``1/sqrt(d_head)`` (GPT-Neo does not scale); set
  ``use_attn_scale: false`` in ``--model-config`` to match GPT-Neo;
* every layer attends globally (GPT-Neo alternates global layers with local layers whose
  window is 256 tokens; with our 256/512-token contexts only the 512 case differs);
* q/k/v projections have biases (GPT-Neo has none) and the context is 512, not 2048;
* the tokenizer is our own byte-level BPE (4,096 ids by default), not GPT-Neo's 50,257.

GPT-Neo's architectural "local attention" window is a different thing from the
*local heads* the analysis finds (heads that attend by distance).

The ``cpu-*`` presets are shapes that train well on a 2-core CPU in an hour or two;
``micro`` exists for tests.
"""

from __future__ import annotations

from typing import Any

from tinyinterp.errors import ConfigError
from tinyinterp.models.config import ModelConfig

COMMON: dict[str, Any] = {
    "act_fn": "gelu_new",
    "normalization_type": "LN",
    "positional_embedding_type": "standard",
    "use_attn_scale": True,
    "eps": 1e-5,
    "default_prepend_bos": True,
}


def _shape(n_layers: int, d_model: int, n_heads: int, n_ctx: int, d_mlp: int | None = None) -> dict[str, Any]:
    return {
        "n_layers": n_layers,
        "d_model": d_model,
        "n_heads": n_heads,
        "d_head": d_model // n_heads,
        "d_mlp": d_mlp if d_mlp is not None else 4 * d_model,
        "n_ctx": n_ctx,
    }


PRESETS: dict[str, dict[str, Any]] = {
    # shapes of the released TinyStories models (16 heads each)
    "ts-1m": _shape(8, 64, 16, 512),
    "ts-3m": _shape(8, 128, 16, 512),
    "ts-8m": _shape(8, 256, 16, 512),
    "ts-28m": _shape(8, 512, 16, 512),
    "ts-33m": _shape(4, 768, 16, 512),
    "ts-1l-21m": _shape(1, 1024, 16, 512),
    "ts-2l-33m": _shape(2, 1024, 16, 512),
    # CPU-friendly shapes
    "cpu-1l": _shape(1, 256, 8, 256),
    "cpu-2l": _shape(2, 192, 8, 256),
    "cpu-4l": _shape(4, 128, 8, 256),
    # for tests and smoke runs
    "micro": _shape(1, 32, 4, 64),
}

PRESET_NOTES: dict[str, str] = {
    "ts-1m": "TinyStories-1M shape (8L, d64, 16 heads of 4)",
    "ts-3m": "TinyStories-3M shape (8L, d128)",
    "ts-8m": "TinyStories-8M shape (8L, d256)",
    "ts-28m": "TinyStories-28M shape (8L, d512)",
    "ts-33m": "TinyStories-33M shape (4L, d768)",
    "ts-1l-21m": "TinyStories-1Layer-21M shape (1L, d1024)",
    "ts-2l-33m": "TinyStories-2Layers-33M shape (2L, d1024)",
    "cpu-1l": "one layer, d256, 8 heads: the interpretability setting, CPU-sized",
    "cpu-2l": "two layers, d192, 8 heads",
    "cpu-4l": "four layers, d128, 8 heads",
    "micro": "one layer, d32, 4 heads, ctx 64: tests and smoke runs",
}


def preset_config(name: str, d_vocab: int, **overrides: Any) -> dict[str, Any]:
    """``config.json`` fields from a preset name plus overrides, validated by :class:`ModelConfig`."""
    return preset_model_config(name, d_vocab, **overrides).to_dict()


def preset_model_config(name: str, d_vocab: int, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of a preset with ``d_vocab`` and ``overrides`` (``None`` values are ignored)."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = {**COMMON, **PRESETS[name], "d_vocab": d_vocab, "model_name": f"tinyinterp-{name}"}
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ModelConfig.from_dict(cfg)
    except ConfigError as exc:
        raise ConfigError(f"model config: {exc}") from None
