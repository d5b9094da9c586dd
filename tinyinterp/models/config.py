"""The model config: one typed dataclass, validated in ``__post_init__``.

Its fields are ``HookedTransformerConfig``'s names (``config.json`` of a checkpoint holds them
as plain JSON), limited to what tinyinterp builds: pre-LayerNorm GPT-2/GPT-Neo blocks with
learned positions. Every field's type and range is checked here, once, for presets, ``--model-config``
overrides, checkpoint files and Hugging Face imports alike; a bad value is a
:class:`~tinyinterp.errors.ConfigError` naming the field and the allowed values.

:meth:`ModelConfig.weight_shapes` gives the name and shape of every tensor of the
``HookedTransformer`` state dict without building anything, so a loader compares them with a
safetensors header (and the size with the machine's memory) before it allocates a byte.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from tinyinterp.errors import ConfigError, check_fields

ACT_FNS = ("gelu_new", "gelu", "gelu_fast", "relu", "silu")
ATTN_TYPES = ("global", "local")
# generous bounds: the largest TinyStories/GPT-2 shapes are far inside them; beyond them a
# "config" is a typo or an attack, not a model
LIMITS = {"n_layers": 1024, "d_model": 1 << 16, "n_heads": 1024, "d_head": 1 << 12, "d_mlp": 1 << 18,
          "n_ctx": 1 << 16, "d_vocab": 1 << 20, "window_size": 1 << 16}


@dataclass(frozen=True)
class ModelConfig:
    n_layers: int
    """Transformer blocks."""
    d_model: int
    """Width of the residual stream."""
    n_heads: int
    """Attention heads per layer."""
    d_head: int
    """Width of each head (usually ``d_model // n_heads``)."""
    d_mlp: int
    """Hidden width of each MLP."""
    n_ctx: int
    """Context length: rows of the position embedding."""
    d_vocab: int
    """Token ids: rows of the embedding."""
    d_vocab_out: int = -1
    """Logits per position; -1: the same as ``d_vocab``."""
    act_fn: str = "gelu_new"
    """MLP activation: one of ``ACT_FNS``."""
    eps: float = 1e-5
    """LayerNorm epsilon, in (0, 1)."""
    use_attn_scale: bool = True
    """Divide attention scores by ``sqrt(d_head)`` (GPT-2); GPT-Neo does not."""
    scale_attn_by_inverse_layer_idx: bool = False
    """GPT-2's option to also divide layer ``i``'s scores by ``i + 1``."""
    attn_types: list[str] | None = None
    """Per layer ``"global"`` or ``"local"`` (GPT-Neo); None: all global."""
    window_size: int | None = None
    """Width of local attention; needed when a layer is local."""
    use_local_attn: bool = False
    """Whether ``attn_types`` has local layers (TransformerLens reads this)."""
    normalization_type: str = "LN"
    """Only ``"LN"`` (pre-LayerNorm blocks)."""
    positional_embedding_type: str = "standard"
    """Only ``"standard"`` (learned positions)."""
    default_prepend_bos: bool = True
    """``to_tokens`` prepends ``<|endoftext|>``."""
    model_name: str = "custom"
    """A display name."""
    original_architecture: str | None = None
    """The Hugging Face class a model was imported from, e.g. ``"GPTNeoForCausalLM"``."""

    def __post_init__(self):
        for name, limit in LIMITS.items():
            v = getattr(self, name)
            if name == "window_size" and v is None:
                continue
            if not _is_int(v) or not 0 < v <= limit:
                raise ConfigError(f"field {name}={_show(v)} must be a positive integer (at most {limit:,})")
        if not _is_int(self.d_vocab_out) or not (self.d_vocab_out == -1 or 0 < self.d_vocab_out <= LIMITS["d_vocab"]):
            raise ConfigError(f"field d_vocab_out={_show(self.d_vocab_out)} must be -1 (same as d_vocab) or a positive integer")
        if self.act_fn not in ACT_FNS:
            raise ConfigError(f"field act_fn={_show(self.act_fn)}: use one of {', '.join(ACT_FNS)}")
        if not isinstance(self.eps, (int, float)) or isinstance(self.eps, bool) or not (0 < self.eps < 1):
            raise ConfigError(f"field eps={_show(self.eps)} must be a number in (0, 1), e.g. 1e-5")
        for name in ("use_attn_scale", "scale_attn_by_inverse_layer_idx", "use_local_attn", "default_prepend_bos"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"field {name}={_show(getattr(self, name))} must be true or false")
        for name in ("model_name", "original_architecture"):
            v = getattr(self, name)
            if not (isinstance(v, str) or (v is None and name == "original_architecture")) or len(v or "") > 200:
                raise ConfigError(f"field {name}={_show(v)} must be a string (at most 200 characters)")
        if self.normalization_type != "LN":
            raise ConfigError(f"field normalization_type={_show(self.normalization_type)}: only 'LN' is supported")
        if self.positional_embedding_type != "standard":
            raise ConfigError(f"field positional_embedding_type={_show(self.positional_embedding_type)}: only 'standard' is supported")
        self._check_attention()

    def _check_attention(self) -> None:
        t = self.attn_types
        if t is not None:
            if not isinstance(t, (list, tuple)) or len(t) != self.n_layers or any(x not in ATTN_TYPES for x in t):
                raise ConfigError(f"field attn_types={_show(t)} must list 'global' or 'local' for each of the "
                                  f"{self.n_layers} layer(s)")
            object.__setattr__(self, "attn_types", list(t))
        local = t is not None and "local" in t
        if local and self.window_size is None:
            raise ConfigError("field window_size: local attention layers need a window_size")

    @classmethod
    def from_dict(cls, d: Any) -> "ModelConfig":
        """From ``config.json``'s fields; unknown or missing fields are one-line errors."""
        if not isinstance(d, dict):
            raise ConfigError(f"expected a JSON object of model config fields, not {type(d).__name__}")
        check_fields(cls, d)
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in d]
        if missing:
            raise ConfigError(f"missing field(s) {missing}; restore the file from the original model")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """``config.json``'s fields: only those set away from their defaults, plus the shape."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.default is dataclasses.MISSING or v != f.default or f.name in _ALWAYS:
                out[f.name] = list(v) if isinstance(v, list) else v
        return out

    @property
    def vocab_out(self) -> int:
        return self.d_vocab if self.d_vocab_out == -1 else self.d_vocab_out

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name and shape of every tensor of the ``HookedTransformer`` state dict (a test checks this against
        TransformerLens; its causal ``attn.mask`` buffer is empty, the mask is built at each forward pass)."""
        d, h, e, m, c = self.d_model, self.n_heads, self.d_head, self.d_mlp, self.n_ctx
        out: dict[str, tuple[int, ...]] = {"embed.W_E": (self.d_vocab, d), "pos_embed.W_pos": (c, d)}
        for i in range(self.n_layers):
            p = f"blocks.{i}."
            out.update({p + "ln1.w": (d,), p + "ln1.b": (d,), p + "ln2.w": (d,), p + "ln2.b": (d,),
                        p + "attn.W_Q": (h, d, e), p + "attn.W_K": (h, d, e), p + "attn.W_V": (h, d, e),
                        p + "attn.W_O": (h, e, d), p + "attn.b_Q": (h, e), p + "attn.b_K": (h, e),
                        p + "attn.b_V": (h, e), p + "attn.b_O": (d,), p + "attn.mask": (0, 0), p + "attn.IGNORE": (),
                        p + "mlp.W_in": (d, m), p + "mlp.b_in": (m,), p + "mlp.W_out": (m, d), p + "mlp.b_out": (d,)})
        out.update({"ln_final.w": (d,), "ln_final.b": (d,), "unembed.W_U": (d, self.vocab_out),
                    "unembed.b_U": (self.vocab_out,)})
        return out

    def n_bytes(self) -> int:
        """Memory a loaded fp32 model needs (parameters, causal masks), without building it."""
        shapes = self.weight_shapes()
        masks = sum(math.prod(s) for k, s in shapes.items() if k.endswith(".mask"))
        return 4 * (sum(math.prod(s) for s in shapes.values()) - masks) + masks

    def check_fits_memory(self, where: str) -> None:
        """Refuse a shape whose model would not fit in this machine's memory (before allocating it)."""
        need, have = self.n_bytes(), physical_memory()
        if have and need > have:
            raise ConfigError(f"{where}: this shape needs {need / 2**30:,.1f} GiB for the weights alone, more than this "
                              f"machine's {have / 2**30:,.1f} GiB; check n_layers, d_model, d_mlp, n_ctx and d_vocab")


_ALWAYS = {"act_fn", "normalization_type", "positional_embedding_type", "use_attn_scale", "eps",
           "default_prepend_bos", "model_name"}


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
