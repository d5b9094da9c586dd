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

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tinyinterp.analysis.activations import (CorpusLabels, TopKBuffer, label_corpus, mlp_hook, story_lengths,
                                             stream_activations)
from tinyinterp.analysis.corpus import BOS_TAG, SPACE_TAG, TaggedCorpus
from tinyinterp.analysis.neuron_stats import TagStats, bh_qvalues, quantile_edges, run_tests
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
    batch_tokens: int = 8192
    """Padded tokens per forward batch."""
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


def _gather(batch, labels: CorpusLabels, hooks: list[str]):
    """Flatten a batch to its analysed tokens: acts [tok, unit], tags, words, story, pos."""
    n_pos = batch.mask.shape[1]
    tags, words = labels.padded(batch.stories, n_pos)  # [batch, pos]
    keep = (tags >= 0) & batch.mask.cpu()
    b, p = keep.nonzero(as_tuple=True)
    dev = batch.acts[hooks[0]].device
    acts = torch.cat([batch.acts[h][b.to(dev), p.to(dev)] for h in hooks], dim=1)  # [tok, layer*d_mlp]
    story = torch.as_tensor(batch.stories)[b]
    return acts, tags[b, p].to(dev), words[b, p].to(dev), story, p


def _split_indices(corpus: TaggedCorpus, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Story indices of ``corpus.split(seed)``'s two halves (selection, held-out)."""
    where = {id(s): i for i, s in enumerate(corpus.stories)}
    a, b = corpus.split(seed)
    return (np.array([where[id(s)] for s in a.stories], dtype=np.int64),
            np.array([where[id(s)] for s in b.stories], dtype=np.int64))


def _calibrate(model, corpus, labels, indices, hooks, cfg: NeuronConfig) -> torch.Tensor:
    """Activations of up to ``calib_tokens`` analysed tokens from random stories of ``indices``."""
    order = np.random.default_rng(cfg.split_seed + 1).permutation(indices)
    counts = np.array([(labels.tag_ids[i] >= 0).sum() for i in order])
    take = order[: int(np.searchsorted(np.cumsum(counts), cfg.calib_tokens)) + 1]
    parts = [_gather(bt, labels, hooks)[0] for bt in stream_activations(
        model, corpus, hooks, cfg.batch_tokens, indices=take, desc="calibrate")]
    return torch.cat(parts)[: cfg.calib_tokens]


def _layers(model, cfg: NeuronConfig) -> list[int]:
    layers = list(range(model.cfg.n_layers)) if cfg.layers is None else cfg.layers
    bad = [x for x in layers if not 0 <= x < model.cfg.n_layers]
    if bad:
        raise ConfigError(f"NeuronConfig.layers: {bad} out of range for a {model.cfg.n_layers}-layer model")
    if model.cfg.d_mlp is None or model.cfg.attn_only:
        raise ConfigError("model has no MLP layers; neuron analysis needs d_mlp")
    return layers


def find_pos_neurons(model, corpus: TaggedCorpus, config: NeuronConfig | None = None, *,
                     label: str = "neurons") -> NeuronResults:
    """Find MLP neurons selective for a part of speech; see the module docstring for the method.

    ``label`` prefixes the progress bars (the untrained control runs as "untrained control").

    >>> res = find_pos_neurons(model, corpus)            # doctest: +SKIP
    >>> res.selective("NOUN").head()                     # doctest: +SKIP
    """
    from tinyinterp.analysis.neuron_controls import examples_for, logit_effects, untrained_copy

    cfg = config or NeuronConfig()
    if len(corpus) < 4:
        raise DataError(f"corpus has {len(corpus)} stories; neuron analysis needs at least 4 (two halves)")
    layers = _layers(model, cfg)
    hooks = [mlp_hook(x) for x in layers]
    d_mlp = model.cfg.d_mlp
    labels = label_corpus(corpus, cfg.include_continuations, cfg.exclude_tags)
    n_tags = len(labels.tags)
    if n_tags < 2:
        raise DataError(f"corpus has {n_tags} analysable tag(s) ({labels.tags}); need at least 2")
    sel_idx, out_idx = _split_indices(corpus, cfg.split_seed)

    sample = _calibrate(model, corpus, labels, sel_idx, hooks, cfg)  # [tok, unit]
    edges = quantile_edges(sample, cfg.n_bins)
    shift = edges[:, edges.shape[1] // 2]  # ≈ median: centres the moment sums
    del sample

    def pass_over(indices: np.ndarray, held_out: bool, desc: str) -> tuple[TagStats, TopKBuffer | None]:
        amb = labels.ambiguous(cfg.ambiguous_min_count) if held_out else None
        ts = TagStats(edges, shift, n_tags, amb)
        top = TopKBuffer(edges.shape[0], cfg.top_k, edges.device) if held_out else None
        for bt in stream_activations(model, corpus, hooks, cfg.batch_tokens, indices, cfg.progress, desc):
            acts, tags, words, story, pos = _gather(bt, labels, hooks)
            ts.update(acts, tags, words)
            if top is not None:
                top.update(acts, story, pos)
        return ts, top

    sel_stats, _ = pass_over(sel_idx, False, f"{label}: selection half")
    out_stats, top = pass_over(out_idx, True, f"{label}: held-out half")
    sel = run_tests(sel_stats, cfg.min_support)
    rep = run_tests(out_stats, cfg.min_support, cfg.ambiguous_min_support)
    q = bh_qvalues(rep.p_value)  # over every held-out neuron × tag test with support

    thr = cfg.auroc_threshold
    selected = sel.valid & (np.nan_to_num(sel.auroc, nan=0.0) >= thr)
    selective = selected & (np.nan_to_num(rep.auroc, nan=0.0) >= thr) & (np.nan_to_num(q, nan=1.0) < cfg.fdr)
    discovered = (np.nan_to_num(rep.auroc, nan=0.0) >= thr) & (np.nan_to_num(q, nan=1.0) < cfg.fdr)
    best = np.where(sel.valid.any(1), np.nanargmax(np.where(sel.valid, sel.auroc, -1.0), 1), -1)  # [unit]
    keep = np.zeros_like(selected)
    if cfg.rows == "all":
        keep[:] = True
    else:
        has = best >= 0
        keep[np.arange(len(best))[has], best[has]] = True
        keep |= selected
    units, tag_ids = keep.nonzero()

    # top-k controls on the held-out half (exact values from the buffer)
    top_story, top_pos = top.story.cpu().numpy(), top.pos.cpu().numpy()  # [unit, k]
    top_tag = np.full(top_story.shape, -1)
    top_word = np.full(top_story.shape, -1)
    filled = top_story >= 0
    for u, j in zip(*filled.nonzero()):  # units × k lookups, independent of corpus size
        top_tag[u, j] = labels.tag_ids[top_story[u, j]][top_pos[u, j]]
        top_word[u, j] = labels.word_ids[top_story[u, j]][top_pos[u, j]]
    n_types = np.array([len(set(w[w >= 0].tolist())) for w in top_word])
    top_share = np.array([np.bincount(w[w >= 0]).max() / (w >= 0).sum() if (w >= 0).any() else math.nan
                          for w in top_word])  # share of the top-k held by its most frequent word type

    logits = logit_effects(model, [(layers[u // d_mlp], u % d_mlp) for u in sorted(set(units.tolist()))],
                           cfg.n_logit_tokens)
    rows = []
    for u, t in zip(units.tolist(), tag_ids.tolist()):
        layer, neuron = layers[u // d_mlp], u % d_mlp
        n_top = int(filled[u].sum())
        rows.append({
            "layer": layer, "neuron": neuron, "pos": labels.tags[t], "held_out": True,
            "auroc": float(rep.auroc[u, t]), "ap": float(rep.ap[u, t]), "cohens_d": float(rep.cohens_d[u, t]),
            "mean_diff": float(rep.mean_diff[u, t]), "mean_pos": float(rep.mean_pos[u, t]),
            "mean_neg": float(rep.mean_neg[u, t]), "p_value": float(rep.p_value[u, t]), "q_value": float(q[u, t]),
            "n_pos": int(rep.n_pos[u, t]), "n_neg": int(rep.n_neg[u, t]), "auroc_err": float(rep.auroc_err[u, t]),
            "auroc_select": float(sel.auroc[u, t]), "best_tag": bool(best[u] == t), "selected": bool(selected[u, t]),
            "selective": bool(selective[u, t]),
            "top_k_precision": float((top_tag[u] == t).sum() / n_top) if n_top else math.nan,
            "n_word_types_top_k": int(n_types[u]), "top_k_word_share": float(top_share[u]),
            "ambiguous_auroc": float(rep.ambiguous_auroc[u, t]),
            "n_ambiguous_pos": int(rep.ambiguous_n_pos[u, t]), "n_ambiguous_neg": int(rep.ambiguous_n_neg[u, t]),
            **logits.get((layer, neuron), {}),
        })
    rows.sort(key=lambda r: (not r["selective"], -np.nan_to_num(r["auroc"], nan=-1.0), r["layer"], r["neuron"]))

    n_valid = int(rep.valid.sum())
    per_tag = {tag: int(selective[:, i].sum()) for i, tag in enumerate(labels.tags)}
    summary = {
        "n_stories": len(corpus), "n_stories_select": len(sel_idx), "n_stories_held_out": len(out_idx),
        "n_tokens_select": sel_stats.n_tokens, "n_tokens_held_out": out_stats.n_tokens,
        "truncated_stories": int((story_lengths(corpus, model.cfg.n_ctx) < [len(s) for s in corpus.stories]).sum()),
        "layers": layers, "d_mlp": d_mlp, "n_neurons": len(layers) * d_mlp, "tags": labels.tags,
        "tag_support_held_out": dict(zip(labels.tags, out_stats.support.tolist())),
        "tag_word_types": dict(zip(labels.tags, (labels.tag_counts > 0).sum(0).tolist())),  # whole corpus
        "n_tests": n_valid, "auroc_threshold": thr, "fdr": cfg.fdr,
        "n_significant": int((np.nan_to_num(q, nan=1.0) < cfg.fdr).sum()),
        "n_discoveries": int(discovered.sum()), "discovery_rate": float(discovered.sum() / max(n_valid, 1)),
        "n_selected": int(selected.sum()), "selective_per_tag": per_tag,
        "n_selective": int(selective.sum()), "n_selective_neurons": int(selective.any(1).sum()),
        "max_auroc_err": float(np.nanmax(rep.auroc_err)) if n_valid else math.nan,
        "method": (f"AUROC/AP from {cfg.n_bins} per-neuron quantile bins (edges from {cfg.calib_tokens} selection-half "
                   "tokens); one-sided Mann-Whitney (normal approx., tie+continuity corrected); BH over all held-out tests"),
        "config": dataclasses.asdict(cfg),
    }
    res = NeuronResults(rows=rows, summary=summary)
    if cfg.n_examples:
        res.examples = examples_for(model, corpus, res, top, layers, cfg)
    if cfg.untrained_control:
        ctrl_cfg = dataclasses.replace(cfg, untrained_control=False, n_examples=0)
        n_ctrl = len(corpus) if cfg.control_max_stories is None else min(len(corpus), cfg.control_max_stories)
        ctrl_corpus = corpus if n_ctrl == len(corpus) else TaggedCorpus(
            corpus.stories[:n_ctrl], corpus.spacy_model, corpus.coverage, dict(corpus.meta))
        res.control = find_pos_neurons(untrained_copy(model, cfg.control_seed), ctrl_corpus, ctrl_cfg,
                                       label="untrained control")
        summary["untrained_control"] = {k: res.control.summary[k] for k in (
            "n_selective", "n_selective_neurons", "selective_per_tag", "n_discoveries", "discovery_rate", "n_tests",
            "n_stories")}
        log.info("untrained control: %d selective neuron(s)", res.control.summary["n_selective_neurons"])
    log.info("neurons: %d selective neuron x tag pair(s) of %d tests", summary["n_selective"], n_valid)
    return res
