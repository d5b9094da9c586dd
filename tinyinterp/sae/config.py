"""SAE training configuration: one dataclass, every field documented where it is declared.

The fields map onto SAELens' ``LanguageModelSAERunnerConfig`` and its SAE configs
(:func:`tinyinterp.sae.train.runner_config` does the mapping); only what a tinyinterp
user needs to choose is exposed here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from tinyinterp.errors import ConfigError, check_fields

ARCHITECTURES = ("batchtopk", "topk")
_HOOK = re.compile(r"^(blocks\.\d+\.(mlp\.hook_post|mlp\.hook_pre|hook_mlp_out|hook_resid_post|hook_resid_pre|hook_resid_mid|hook_attn_out)|hook_embed|hook_pos_embed)$")


@dataclass
class SAETrainConfig:
    # --- what to train on ------------------------------------------------------------
    hook: str = "blocks.0.mlp.hook_post"
    """TransformerLens hook whose activations the SAE reconstructs (``blocks.L.mlp.hook_post`` is the neuron basis)."""
    data: list[str] = field(default_factory=list)
    """Training stories: files, folders, globs or ``hf:NAME[:SPLIT]`` (never the evaluation files)."""
    max_stories: int | None = None
    """Read at most this many training stories (``None``: all)."""
    context_size: int | None = None
    """Tokens per window fed to the model; ``None``: the model's ``n_ctx``."""
    # --- the dictionary --------------------------------------------------------------
    architecture: str = "batchtopk"
    """``batchtopk`` (k active features on average over a batch; saved as JumpReLU) or ``topk`` (exactly k per token)."""
    d_sae: int = 3072
    """Number of features (dictionary size)."""
    k: float = 32
    """Active features per token (``batchtopk``: on average)."""
    aux_loss_coefficient: float = 1 / 32
    """Weight of the aux-k loss that trains dead features on the residual error (SAELens' TopK aux loss)."""
    # --- optimisation ----------------------------------------------------------------
    training_tokens: int = 4_000_000
    """Activations (token positions) seen in training; several epochs if the corpus is smaller."""
    batch_size: int = 4096
    """Activations per optimizer step."""
    lr: float = 1e-3
    """Peak Adam learning rate."""
    lr_warm_up_steps: int = 50
    """Linear warm-up steps."""
    lr_decay_fraction: float = 0.3
    """Final share of the steps over which the learning rate decays linearly to 0."""
    buffer_tokens: int = 65536
    """Activations held in SAELens' shuffling buffer (more: better mixing, more memory; >= batch_size)."""
    store_batch_windows: int = 16
    """Windows per model forward pass when generating activations."""
    seed: int = 0
    """Seed for the window order and the SAE's initialisation."""
    checkpoints: int = 8
    """Intermediate checkpoints a rerun resumes from (0: none)."""
    threads: int | None = None
    """torch threads (``None``: torch's default)."""

    def __post_init__(self):
        if isinstance(self.data, str):
            self.data = [self.data]
        if not _HOOK.match(self.hook):
            raise ConfigError(f"hook={self.hook!r}: not a supported hook; use e.g. blocks.0.mlp.hook_post, "
                              "blocks.0.hook_mlp_out or blocks.0.hook_resid_post")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"architecture={self.architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
        for name in ("d_sae", "training_tokens", "batch_size", "buffer_tokens", "store_batch_windows"):
            _positive_int(name, getattr(self, name))
        for name in ("max_stories", "context_size", "threads"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("lr_warm_up_steps", "seed", "checkpoints"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{name}={v!r}: must be an integer >= 0")
        if not 0 < self.k <= self.d_sae:
            raise ConfigError(f"k={self.k}: must be in (0, d_sae={self.d_sae}]")
        if self.architecture == "topk" and float(self.k) != int(self.k):
            raise ConfigError(f"k={self.k}: a topk SAE needs a whole number of features per token (or use batchtopk)")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr}: must be > 0")
        if not 0 <= self.lr_decay_fraction <= 1:
            raise ConfigError(f"lr_decay_fraction={self.lr_decay_fraction}: must be in [0, 1]")
        if self.aux_loss_coefficient < 0:
            raise ConfigError(f"aux_loss_coefficient={self.aux_loss_coefficient}: must be >= 0")
        if self.buffer_tokens < self.batch_size:
            raise ConfigError(f"buffer_tokens={self.buffer_tokens} < batch_size={self.batch_size}: the shuffling buffer must hold a batch")
        if self.training_tokens < self.batch_size:
            raise ConfigError(f"training_tokens={self.training_tokens} < batch_size={self.batch_size}: train for at least one step")

    @property
    def steps(self) -> int:
        return self.training_tokens // self.batch_size

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "SAETrainConfig":
        check_fields(cls, obj, "SAE config")
        return cls(**obj)


def _positive_int(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConfigError(f"{name}={v!r}: must be a positive integer")
