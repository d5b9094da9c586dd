"""Training configuration: one dataclass, every field documented where it is declared."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from tinyinterp.device import check_device
from tinyinterp.errors import ConfigError, TinyInterpError, check_fields
from tinyinterp.models.presets import PRESETS


_FLOAT_FIELDS = ("val_fraction", "lr", "min_lr_ratio", "epochs", "weight_decay", "beta1", "beta2", "grad_clip", "dropout")
_INT_FIELDS = ("vocab_size", "batch_size", "grad_accum", "warmup_steps", "max_steps", "max_tokens", "seed", "eval_every",
               "eval_tokens", "log_every", "save_every", "snapshots", "sample_tokens", "threads")
_OPTIONAL = ("epochs", "max_steps", "max_tokens", "eval_tokens", "threads")
MAX_SEED = 2**63 - 1
_INT_FROM_FLOAT = ("max_tokens", "eval_tokens")  # 1e6 in a JSON config means 1000000


def documented(default: Any = dataclasses.MISSING, help: str = "", factory: Any = dataclasses.MISSING) -> Any:
    """A field with its help text in ``metadata["help"]``: the CLI's flags and ``--help`` are derived from it."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a training run needs; each field's help is in its metadata (``tinyinterp train --help``)."""

    # --- data -------------------------------------------------------------------------
    data: list[str] = documented(factory=list, help='Training corpus: files, folders, globs or ``hf:NAME[:SPLIT]``.')
    eval_data: list[str] = documented(
        factory=list, help='Evaluation corpus; never trained on. Empty: hold out ``val_fraction`` of stories by hash.')
    val_fraction: float = documented(0.01, 'Share of stories held out for validation when ``eval_data`` is empty.')
    dedupe: bool = documented(True, 'Drop exact duplicate stories.')
    tokenizer: str | None = documented(None, 'Existing tokenizer folder; ``None`` trains a byte-level BPE on ``data``.')
    vocab_size: int = documented(4096, 'Size of the BPE trained when ``tokenizer`` is ``None``.')
    # --- model ------------------------------------------------------------------------
    preset: str = documented("cpu-1l", 'Model shape (see ``tinyinterp presets``).')
    model_overrides: dict[str, Any] = documented(
        factory=dict, help='HookedTransformerConfig fields that replace the preset\'s (e.g. ``{"n_ctx": 128}``).')
    dropout: float = documented(
        0.0, 'Dropout on the embeddings and residual branches (training only; the exported model has none).')
    # --- optimisation -----------------------------------------------------------------
    batch_size: int = documented(32, 'Windows per micro-batch per process.')
    grad_accum: int = documented(1, 'Micro-batches per optimizer step.')
    lr: float = documented(3e-3, 'Peak learning rate (after warm-up).')
    min_lr_ratio: float = documented(0.1, 'Final learning rate as a fraction of ``lr`` (cosine decay).')
    warmup_steps: int = documented(100, 'Linear warm-up steps.')
    max_steps: int | None = documented(
        None, 'Optimizer steps. Exactly one of ``max_steps``, ``max_tokens``, ``epochs`` is set.')
    max_tokens: int | None = documented(None, 'Train for this many tokens instead.')
    epochs: float | None = documented(None, 'Train for this many passes over the training split instead.')
    weight_decay: float = documented(0.1, 'AdamW weight decay on matrices (not on biases, LayerNorm or embeddings).')
    beta1: float = documented(0.9, "AdamW's first-moment decay (momentum), in [0, 1).")
    beta2: float = documented(0.95, "AdamW's second-moment decay, in [0, 1); lower is steadier for small batches.")
    grad_clip: float = documented(1.0, 'Clip the global gradient norm to this (0 disables).')
    seed: int = documented(0, 'Seeds initialisation, data order and dropout.')
    # --- evaluation, logging, checkpoints ---------------------------------------------
    eval_every: int = documented(200, 'Evaluate every N steps (and at the end).')
    eval_tokens: int | None = documented(
        100_000, 'Validation tokens per evaluation: the same first N tokens at every evaluation (one comparable '
        'curve); at the end the whole split is evaluated once more, as a separate metrics.jsonl record, when it is '
        'larger.')
    log_every: int = documented(10, 'Write a metrics line every N steps.')
    save_every: int = documented(500, 'Write a resumable checkpoint every N steps (and at the end).')
    snapshots: int = documented(0, 'Number of log-spaced model snapshots to keep in ``snapshots/`` (0: none).')
    sample_prompts: list[str] = documented(factory=lambda: ["Once upon a time", "Lily and Tom went to"],
                                           help="Prompts for the sample generations logged at each evaluation.")
    sample_tokens: int = documented(40, 'Tokens generated per sample prompt at each evaluation.')
    save_dtype: str = documented(
        "float32", 'Dtype of the exported weights: ``float32`` or ``float16`` (loading restores fp32).')
    # --- hardware ---------------------------------------------------------------------
    device: str = documented(
        "cpu", '``cpu``, ``cuda`` or ``cuda:N`` (under torchrun each process takes its local rank).')
    bf16: bool = documented(False, 'bf16 autocast for the forward pass (GPUs).')
    compile: bool = documented(False, '``torch.compile`` the model (first step is slow, 60–100 s on CPU).')
    threads: int | None = documented(None, "torch intra-op threads (default: torch's choice).")

    def __post_init__(self):
        if isinstance(self.data, str):
            self.data = [self.data]
        if isinstance(self.eval_data, str):
            self.eval_data = [self.eval_data]
        if not isinstance(self.preset, str) or self.preset not in PRESETS:
            raise ConfigError(f"preset={self.preset!r}: unknown; choose one of {', '.join(PRESETS)}")
        self._check_types()
        self._check_ranges()
        self._check_model()

    def _check_types(self) -> None:
        for name in _FLOAT_FIELDS + _INT_FIELDS:  # e.g. "lr": "fast" in a --config file
            v = getattr(self, name)
            if v is None and name in _OPTIONAL:
                continue
            if name in _INT_FIELDS:
                if isinstance(v, float) and v.is_integer() and name in _INT_FROM_FLOAT:
                    v = int(v)
                    setattr(self, name, v)
                if not isinstance(v, int) or isinstance(v, bool):
                    raise ConfigError(f"{name}={v!r}: must be an integer")
            elif not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ConfigError(f"{name}={v!r}: must be a finite number")
        if not isinstance(self.model_overrides, dict):
            raise ConfigError(f"model_overrides={self.model_overrides!r}: must be a JSON object of HookedTransformerConfig fields")

    def _check_ranges(self) -> None:
        positive_ints = ("batch_size", "grad_accum", "eval_every", "log_every", "save_every", "vocab_size", "sample_tokens")
        for name in positive_ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name}={v!r}: must be a positive integer")
        for name in ("lr",):
            if not (getattr(self, name) > 0):
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be > 0")
        checks = {  # field: (valid?, the valid range)
            "min_lr_ratio": (0 <= self.min_lr_ratio <= 1, "between 0 and 1"),
            "warmup_steps": (self.warmup_steps >= 0, ">= 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "beta1": (0 <= self.beta1 < 1, "in [0, 1)"),
            "beta2": (0 <= self.beta2 < 1, "in [0, 1)"),
            "grad_clip": (self.grad_clip >= 0, ">= 0 (0 disables clipping)"),
            "dropout": (0 <= self.dropout < 1, "in [0, 1)"),
            "val_fraction": (0 <= self.val_fraction < 1, "in [0, 1)"),
            "snapshots": (self.snapshots >= 0, ">= 0"),
            "threads": (self.threads is None or self.threads > 0, "a positive integer"),
        }
        for name, (ok, rule) in checks.items():
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r}: out of range; must be {rule}")
        budgets = [n for n in ("max_steps", "max_tokens", "epochs") if getattr(self, n) is not None]
        if len(budgets) != 1:
            raise ConfigError("set exactly one of max_steps, max_tokens, epochs (e.g. --max-steps 1000)")
        b = budgets[0]
        if not getattr(self, b) > 0:
            raise ConfigError(f"{b}={getattr(self, b)!r}: must be > 0")
        if self.eval_tokens is not None and self.eval_tokens <= 0:
            raise ConfigError(f"eval_tokens={self.eval_tokens!r}: must be > 0 (or None for the whole split)")
        if self.save_dtype not in ("float32", "float16"):
            raise ConfigError(f"save_dtype={self.save_dtype!r}: use float32 or float16")
        if not self.data:
            raise ConfigError("data: no training corpus given (pass --data FILE...)")

    def _check_model(self) -> None:
        """Seed, device and the model shape, before any data work (the real d_vocab comes from the tokenizer later)."""
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed={self.seed!r}: out of range; must be in [0, 2**63)")
        self.device = check_device(self.device, "device")
        from tinyinterp.models.hooked import hooked_config
        from tinyinterp.models.presets import preset_model_config

        try:
            mc = preset_model_config(self.preset, d_vocab=max(self.vocab_size, 1), **self.model_overrides)
            mc.check_fits_memory("model_overrides")
            hooked_config(mc, "model config")
        except TinyInterpError as exc:
            raise ConfigError(f"model_overrides: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrainConfig":
        check_fields(cls, d, "training config")
        return cls(**d)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)
