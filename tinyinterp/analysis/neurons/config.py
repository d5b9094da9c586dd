"""Settings of the neuron analysis (:func:`~tinyinterp.analysis.neurons.selection.find_pos_neurons`).

The decision thresholds (AUROC, FDR, support, the identity tests) live in
:class:`~tinyinterp.analysis.neurons.identity.IdentityConfig` (``NeuronConfig.identity``); the
fields here say what is streamed and how.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinyinterp.analysis.corpus.store import BOS_TAG, SPACE_TAG
from tinyinterp.analysis.neurons.identity import IdentityConfig
from tinyinterp.errors import ConfigError


@dataclass
class NeuronConfig:
    layers: list[int] | None = None
    """MLP layers to analyse (None: all)."""
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    """The decision: candidates, replication, the identity tests, BH level, top-k size (see its fields)."""
    in_memory: bool = True
    """Keep every analysed token's activations (4 bytes x tokens x neurons) for the exact tests: identity
    tests, exact AUROC/AP, story bootstrap, lexical baselines. False (and always in sharded / torchrun runs):
    streaming statistics only; rows then say which identity tests were untestable and why."""
    max_memory_gb: float = 8.0
    """``in_memory`` falls back to streaming (with a warning) when the kept activations would exceed this."""
    tail: int = 2048
    """Streaming runs: activations per neuron kept exactly at the top for average precision (rare tags)."""
    n_bins: int = 128
    """Quantile bins per neuron for the streamed AUROC (error ≲ 1/(2·n_bins))."""
    calib_tokens: int = 16_384
    """Tokens from the selection half used to place the bin edges."""
    include_continuations: bool = False
    """Analyse continuation tokens too (with their word's tag); default: word-initial tokens only."""
    exclude_tags: tuple[str, ...] = (BOS_TAG, SPACE_TAG)
    """Tags whose tokens are never analysed."""
    split_seed: int = 0
    """Seed of ``TaggedCorpus.split`` (which stories select, which report)."""
    batch_tokens: int = 4096
    """Padded tokens per forward batch (4096: on CPU, TransformerLens runs faster than at 8192, and the
    attention tensors of a batch stay ~4× smaller)."""
    untrained_control: bool = True
    """Also analyse an untrained model of the same architecture."""
    control_seed: int = 1234
    """Initialisation seed of the untrained control model."""
    control_max_stories: int | None = None
    """Analyse the control on the first N stories only (None: the whole corpus, as the model)."""
    n_examples: int = 5
    """Max-activating examples stored per example neuron (0: none)."""
    example_window: int = 8
    """Tokens either side of an example's max-activating token."""
    max_example_neurons: int = 32
    """Neurons (``pos`` rows first, then ``token``, ``untestable``, by held-out AUROC) that get examples."""
    n_logit_tokens: int = 10
    """Top promoted / suppressed tokens per reported neuron (direct path W_out[n] @ W_U)."""
    progress: bool = False
    """Show tqdm progress bars."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"NeuronConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("n_bins", "calib_tokens", "batch_tokens", "tail"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < (2 if name == "n_bins" else 1):
                raise bad(name, "must be a positive integer" + (" >= 2" if name == "n_bins" else ""))
        if self.control_max_stories is not None and (not isinstance(self.control_max_stories, int)
                                                     or self.control_max_stories < 4):
            raise bad("control_max_stories", "must be None or an integer >= 4")
        for name in ("n_examples", "example_window", "max_example_neurons", "n_logit_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise bad(name, "must be a non-negative integer")
        if not self.max_memory_gb > 0:
            raise bad("max_memory_gb", "must be > 0")
        if not isinstance(self.identity, IdentityConfig):
            raise bad("identity", "must be an IdentityConfig")
        if self.n_examples > self.identity.top_k:
            raise bad("n_examples", f"cannot exceed identity.top_k={self.identity.top_k}")
        self.exclude_tags = tuple(self.exclude_tags)
        if self.layers is not None:
            self.layers = [int(x) for x in self.layers]
