"""Settings of the neuron analysis (:func:`~tinyinterp.analysis.neurons.selection.find_pos_neurons`)."""

from __future__ import annotations

from dataclasses import dataclass

from tinyinterp.analysis.corpus.store import BOS_TAG, SPACE_TAG
from tinyinterp.errors import ConfigError


@dataclass
class NeuronConfig:
    layers: list[int] | None = None
    """MLP layers to analyse (None: all)."""
    min_support: int = 20
    """A neuron × tag test needs at least this many tag tokens and non-tag tokens in a half."""
    auroc_threshold: float = 0.9
    """AUROC needed to be selected (selection half) and to count as selective (held-out half)."""
    fdr: float = 0.05
    """Benjamini–Hochberg false discovery rate for the held-out tests."""
    n_bins: int = 128
    """Quantile bins per neuron for the streamed AUROC (error ≲ 1/(2·n_bins))."""
    calib_tokens: int = 16_384
    """Tokens from the selection half used to place the bin edges."""
    top_k: int = 20
    """Max-activating tokens kept per neuron (top-k precision, word-type control, examples)."""
    include_continuations: bool = False
    """Analyse continuation tokens too (with their word's tag); default: word-initial tokens only."""
    exclude_tags: tuple[str, ...] = (BOS_TAG, SPACE_TAG)
    """Tags whose tokens are never analysed."""
    ambiguous_min_count: int = 2
    """A word is ambiguous for a tag when it carries it and another tag, each this many times."""
    ambiguous_min_support: int = 10
    """Ambiguous-word AUROC needs this many ambiguous tokens with and without the tag (else NaN)."""
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
    rows: str = "candidates"
    """``candidates``: each neuron's best tag plus every selected pair; ``all``: every neuron × tag."""
    n_examples: int = 5
    """Max-activating examples stored per example neuron (0: none)."""
    example_window: int = 8
    """Tokens either side of an example's max-activating token."""
    max_example_neurons: int = 32
    """Neurons (selective first, then by held-out AUROC) that get examples."""
    n_logit_tokens: int = 10
    """Top promoted / suppressed tokens per reported neuron (direct path W_out[n] @ W_U)."""
    progress: bool = False
    """Show tqdm progress bars."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"NeuronConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("min_support", "n_bins", "calib_tokens", "top_k", "batch_tokens", "ambiguous_min_count",
                     "ambiguous_min_support"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < (2 if name == "n_bins" else 1):
                raise bad(name, "must be a positive integer" + (" >= 2" if name == "n_bins" else ""))
        if self.control_max_stories is not None and (not isinstance(self.control_max_stories, int)
                                                     or self.control_max_stories < 4):
            raise bad("control_max_stories", "must be None or an integer >= 4")
        for name in ("n_examples", "example_window", "max_example_neurons", "n_logit_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise bad(name, "must be a non-negative integer")
        if not 0.5 <= self.auroc_threshold <= 1.0:
            raise bad("auroc_threshold", "must lie in [0.5, 1]")
        if not 0.0 < self.fdr < 1.0:
            raise bad("fdr", "must lie in (0, 1)")
        if self.rows not in ("candidates", "all"):
            raise bad("rows", "must be 'candidates' or 'all'")
        if self.n_examples > self.top_k:
            raise bad("n_examples", f"cannot exceed top_k={self.top_k}")
        self.exclude_tags = tuple(self.exclude_tags)
        if self.layers is not None:
            self.layers = [int(x) for x in self.layers]
