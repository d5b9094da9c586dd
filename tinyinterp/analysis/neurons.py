"""Part-of-speech-selective MLP neurons, selected on one half of the stories, reported on the other.

For every MLP neuron × UPOS tag with enough support, :func:`find_pos_neurons` streams the
corpus once per half (see :mod:`tinyinterp.analysis.neuron_stats` for the binned AUROC,
average precision and Mann–Whitney method) and:

* **selects** on the selection half: a neuron × tag pair is ``selected`` when its AUROC there
  reaches ``auroc_threshold``; every neuron's best tag on that half is reported too;
* **reports** on the held-out half: AUROC, AP, Cohen's d, mean difference, one-sided p-value,
  Benjamini–Hochberg q-value over *all* neuron × tag tests with support on that half,
  precision of the top-k activations, and the token-identity controls (distinct word types
  among the top-k; AUROC restricted to ambiguous words, i.e. word types that carry this tag
  and another one at least ``ambiguous_min_count`` times each in the corpus);
* a row is ``selective`` when selected, its held-out AUROC ≥ ``auroc_threshold`` and its
  q-value < ``fdr``;
* **controls** with an untrained model of the same architecture (random init, fixed seed)
  analysed the same way; it should find ≈ 0 selective neurons.

Reading the controls: a neuron that detects one word (or one position, e.g. the "upon" of
"Once upon a time") looks selective for a tag dominated by that word; random untrained
neurons do this too. Such rows show few word types in the top-k (``n_word_types_top_k``,
``top_k_word_share`` near 1), an ambiguous-word AUROC near 0.5, and the untrained control
finds neurons for the same tag (``summary["untrained_control"]["selective_per_tag"]``;
``summary["tag_word_types"]`` says how many word types each tag has). Open-class tags
(NOUN, VERB, ADJ) have too many word types for a random neuron to reach a high AUROC.

Tokens analysed: BOS and whitespace tokens are left out (``exclude_tags``); continuation
tokens (the 2nd, 3rd … token of a word) are left out by default, so each word counts once,
at its first token (``include_continuations=True`` keeps them, with their word's tag).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tinyinterp.analysis.corpus import BOS_TAG, SPACE_TAG, TaggedCorpus
from tinyinterp.atomic import write_json, write_text
from tinyinterp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

NEURONS_JSON, NEURONS_CSV, SUMMARY_JSON, EXAMPLES_JSON = (
    "neurons.json", "neurons.csv", "neurons_summary.json", "neuron_examples.json")


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


@dataclass
class NeuronResults:
    """One row per reported neuron × tag (see :meth:`to_frame`), a summary, examples, control."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "layer.neuron" -> examples
    control: "NeuronResults | None" = None  # the untrained model's results

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def selective(self, tag: str | None = None) -> pd.DataFrame:
        """Selective rows (optionally of one tag), best held-out AUROC first."""
        df = self.to_frame()
        if df.empty:
            return df
        df = df[df["selective"] & ((df["pos"] == tag) if tag else True)]
        return df.sort_values("auroc", ascending=False)

    def top_neurons(self, tag: str, n: int = 5, selective_only: bool = False) -> list[tuple[int, int]]:
        """(layer, neuron) of the ``n`` rows for ``tag`` with the highest held-out AUROC."""
        df = self.to_frame()
        df = df[(df["pos"] == tag) & (df["selective"] if selective_only else True)].dropna(subset=["auroc"])
        df = df.sort_values("auroc", ascending=False).head(n)
        return [(int(r.layer), int(r.neuron)) for r in df.itertuples()]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "summary": self.summary, "examples": self.examples,
                "control": None if self.control is None else self.control.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NeuronResults":
        control = None if d.get("control") is None else cls.from_dict(d["control"])
        rows = [{k: (math.nan if v is None and k in _FLOAT_COLS else v) for k, v in r.items()} for r in d["rows"]]
        return cls(rows=rows, summary=d["summary"], examples=d.get("examples", {}), control=control)

    def to_json(self) -> str:
        """Strict JSON (NaN written as null) of everything, control included."""
        return json.dumps(_jsonable(self.to_dict()))

    @classmethod
    def from_json(cls, text: str) -> "NeuronResults":
        return cls.from_dict(json.loads(text))

    def save(self, out: str | os.PathLike) -> Path:
        """Write neurons.json (list of rows), neurons.csv, neurons_summary.json, neuron_examples.json."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / NEURONS_JSON, _jsonable(self.rows))
        write_text(out / NEURONS_CSV, self.to_frame().to_csv(index=False))
        summary = dict(self.summary)
        if self.control is not None:
            summary["control"] = _jsonable(self.control.to_dict())
        write_json(out / SUMMARY_JSON, _jsonable(summary))
        write_json(out / EXAMPLES_JSON, _jsonable(self.examples))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NeuronResults":
        path = Path(path)
        try:
            rows = json.loads((path / NEURONS_JSON).read_text())
            summary = json.loads((path / SUMMARY_JSON).read_text())
            ex_path = path / EXAMPLES_JSON
            examples = json.loads(ex_path.read_text()) if ex_path.exists() else {}
        except FileNotFoundError as exc:
            raise DataError(f"{exc.filename}: missing; pass a folder written by NeuronResults.save") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: unreadable neuron results ({exc}); re-run the analysis") from None
        control = summary.pop("control", None)
        return cls.from_dict({"rows": rows, "summary": summary, "examples": examples, "control": control})


_FLOAT_COLS = {"auroc", "auroc_select", "auroc_err", "ap", "cohens_d", "mean_diff", "mean_pos", "mean_neg",
               "p_value", "q_value", "top_k_precision", "ambiguous_auroc", "top_k_word_share"}


def _jsonable(obj: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python ones, recursively."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def find_pos_neurons(model, corpus: TaggedCorpus, config: NeuronConfig | None = None, *,
                     label: str = "neurons", labels=None) -> NeuronResults:
    """Find MLP neurons selective for a part of speech; see the module docstring for the method.

    ``label`` prefixes the progress bars (the untrained control runs as "untrained control").
    ``labels``: an existing ``label_corpus(corpus, ...)`` with this config's options, to share its memory.
    The corpus is streamed once (selection half, then held-out half) after a calibration pass
    on up to ``calib_tokens`` selection-half tokens; see :class:`~tinyinterp.analysis.neuron_pass.NeuronJob`.

    >>> res = find_pos_neurons(model, corpus)            # doctest: +SKIP
    >>> res.selective("NOUN").head()                     # doctest: +SKIP
    """
    from tinyinterp.analysis.neuron_pass import NeuronJob
    from tinyinterp.analysis.stream import eval_mode, run_pass

    cfg = config or NeuronConfig()
    with eval_mode(model):
        job = NeuronJob(model, corpus, cfg, label, labels)
        run_pass(model, corpus, [job], job.groups, cfg.batch_tokens, cfg.progress, f"{label}: selection + held-out")
        return job.finish()
