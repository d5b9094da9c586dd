"""``analyze()``: the whole analysis of one model on one corpus, written to a folder.

Stages (each with a progress bar): tag the corpus with spaCy → classify heads and find
POS-selective neurons (held-out, FDR, untrained control), sharing one forward pass
(:func:`heads_and_neurons`) → causal ablation check for the top neurons of NOUN/VERB/ADJ →
layer-wise probes → ``report.html``. Output folder::

    heads.json  heads.csv  heads_meta.json  heads_axes.json
    neurons.json  neurons.csv  neurons_summary.json  neuron_examples.json  neuron_identity.json
    probes.json  sparse_probes.json  ablation.json  summary.json  report.html

Only one analysis may write a folder at a time (an advisory lock, ``.lock``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tinyinterp.analysis.corpus.loading import load_corpus
from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.engine import eval_mode, run_pass
from tinyinterp.analysis.heads.classify import HeadConfig, HeadJob, classify_heads
from tinyinterp.analysis.heads.results import HeadResults
from tinyinterp.analysis.neurons.ablation import AblationResults, ablation_effect
from tinyinterp.analysis.neurons.config import NeuronConfig
from tinyinterp.analysis.neurons.identity import IdentityConfig
from tinyinterp.analysis.neurons.job import NeuronJob
from tinyinterp.analysis.neurons.results import NeuronResults
from tinyinterp.analysis.neurons.selection import find_pos_neurons
from tinyinterp.analysis.probes.dense import ProbeConfig, probe_layers
from tinyinterp.analysis.results_io import folder_lock, jsonable, write_result_json
from tinyinterp.analysis.sharding import merged_stats, read_shards
from tinyinterp.atomic import write_json
from tinyinterp.errors import TinyInterpError

log = logging.getLogger(__name__)
ABLATION_TAGS = ("NOUN", "VERB", "ADJ")


@dataclass
class AnalysisConfig:
    max_stories: int | None = 500
    """Stories read from the corpus (None: all)."""
    heads: HeadConfig = field(default_factory=HeadConfig)
    neurons: NeuronConfig = field(default_factory=NeuronConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    run_heads: bool = True
    run_neurons: bool = True
    run_probes: bool = True
    ablation_tags: tuple[str, ...] = ABLATION_TAGS
    """Tags whose top neurons get the causal mean-ablation check (empty: skip)."""
    ablation_neurons: int = 5
    """Top neurons per tag ablated together."""
    ablation_random: int = 20
    """Random equal-size neuron sets per tag for the comparison (the smallest p-value is 1 / (n + 1))."""
    head_effects: bool = True
    """Head output effects, the two label axes against their nulls, the paper claim and the halves check
    (:func:`tinyinterp.analysis.heads.claims.analyse_heads`): ``heads_axes.json`` and ``summary.json``
    keys ``paper_claim``, ``label_agreement_halves``, ``head_axes``."""
    head_ablation_stories: int = 100
    """Stories for the mean/resample ablation of every head (two forwards per head; 0: skip)."""
    head_halves: bool = True
    """Also label the heads on two disjoint halves of the stories (``label_agreement_halves``)."""
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    """Rules that separate part-of-speech neurons from token detectors (:mod:`tinyinterp.analysis.neurons.identity`)."""
    run_identity: bool = True
    """Run the identity rules, lexical baselines and k-sparse probes on the neurons (``neuron_identity.json``;
    in memory: 4 bytes per analysed token per neuron; not with shards)."""
    identity_sparse_ks: tuple[int, ...] = (1, 8)
    """k of the k-sparse probes compared with the lexical baselines (empty: none)."""
    report: bool = True
    """Write report.html."""
    sparse_probe_tags: tuple[str, ...] = ABLATION_TAGS
    """Tags whose k-sparse probe curve (how many MLP neurons reach AUROC 0.9) is measured with the probes
    (:mod:`tinyinterp.analysis.probes.sparse`; empty: skip)."""

    def __post_init__(self):
        if self.max_stories is not None and self.max_stories <= 0:
            raise TinyInterpError(f"max_stories={self.max_stories}: must be a positive integer")


def heads_and_neurons(model, corpus: TaggedCorpus, heads: HeadConfig | None = None, neurons: NeuronConfig | None = None,
                      progress: bool = False) -> tuple[HeadResults, NeuronResults]:
    """:func:`classify_heads` and :func:`find_pos_neurons` with one shared streaming pass.

    Both analyses calibrate first (their own small passes), then a single forward pass over
    the corpus (selection half, then held-out half; ``min`` of the two ``batch_tokens``) feeds
    the head statistics and the neuron statistics together, so the model's forward runs once
    instead of twice. Results match the separate calls (up to float summation order). The
    untrained control, when configured, is a second model and runs its own pass.
    """
    hcfg, ncfg = heads or HeadConfig(), neurons or NeuronConfig()
    with eval_mode(model):
        hjob = HeadJob(model, corpus, hcfg)
        njob = NeuronJob(model, corpus, ncfg)
        run_pass(model, corpus, [hjob.main, njob], njob.groups, min(hcfg.batch_tokens, ncfg.batch_tokens),
                 progress, "heads + neurons")
        return hjob.finish(), njob.finish()


def analyze(model, corpus: TaggedCorpus | Sequence[str] | str, out: str | os.PathLike,
            config: AnalysisConfig | None = None, model_name: str = "model", progress: bool = True,
            shards: Sequence[str | os.PathLike] | None = None) -> dict[str, Any]:
    """Run every analysis stage of ``model`` on ``corpus`` and write the results to ``out``.

    ``shards``: folders written by ``analyze --shard i/n`` (:mod:`tinyinterp.analysis.sharding`) for
    this model and corpus; their statistics are added instead of running the heads + neurons pass.
    """
    cfg = config or AnalysisConfig()
    cfg = dataclasses.replace(cfg, heads=dataclasses.replace(cfg.heads, progress=progress),  # the caller's stay as given
                              neurons=dataclasses.replace(cfg.neurons, progress=progress),
                              probes=dataclasses.replace(cfg.probes, progress=progress))
    out = Path(out)
    timings: dict[str, float] = {}
    with folder_lock(out):
        t = time.perf_counter()
        if not isinstance(corpus, TaggedCorpus):
            corpus = load_corpus(corpus, model, max_stories=cfg.max_stories, progress=progress)
        timings["tagging_s"] = time.perf_counter() - t
        summary: dict[str, Any] = {
            "model": model_name, "n_layers": model.cfg.n_layers, "n_heads": model.cfg.n_heads, "d_mlp": model.cfg.d_mlp,
            "corpus": {"stories": len(corpus), "tokens": corpus.n_tokens, "spacy_model": corpus.spacy_model,
                       "alignment_coverage": corpus.coverage},
        }
        heads = neurons = probes = None
        stats = heads_and_neurons
        if shards:
            if not (cfg.run_heads and cfg.run_neurons):
                raise TinyInterpError("merging shards needs both the head and the neuron analysis (drop --no-heads/--no-neurons)")
            metas = read_shards(shards)
            summary["shards"] = [m["dir"] for m in metas]
            stats = merged_stats(model, corpus, metas, cfg.heads, cfg.neurons)
        if cfg.run_heads and cfg.run_neurons:  # one shared forward pass for both (or the shards' sums)
            t = time.perf_counter()
            heads, neurons = stats(model, corpus, cfg.heads, cfg.neurons, progress)
            timings["heads_and_neurons_s"] = time.perf_counter() - t
        if cfg.run_heads:
            t = time.perf_counter()
            heads = heads if heads is not None else classify_heads(model, corpus, cfg.heads)
            heads.save(out)
            timings["heads_s"] = time.perf_counter() - t
            labels = [r.label for r in heads.records]
            summary["heads"] = {lab: labels.count(lab) for lab in ("local", "semantic", "sink", "mixed")}
            if cfg.head_effects:
                t = time.perf_counter()
                keys, cost = _head_axes(model, corpus, cfg, out, progress)
                summary.update(keys)
                timings.update({f"head_effects_{k}": v for k, v in cost.items() if k.endswith("_s")})
                timings["head_effects_s"] = time.perf_counter() - t
        if cfg.run_neurons:
            t = time.perf_counter()
            neurons = neurons if neurons is not None else find_pos_neurons(model, corpus, cfg.neurons)
            neurons.save(out)
            timings["neurons_s"] = time.perf_counter() - t
            summary["neurons"] = _neuron_summary(neurons)
            if cfg.run_identity and not shards:
                t = time.perf_counter()
                summary.update(_identity(model, corpus, cfg, out))
                timings["neuron_identity_s"] = time.perf_counter() - t
            if cfg.ablation_tags:
                t = time.perf_counter()
                ablations = _ablations(model, corpus, neurons, cfg, progress)
                ablations.save(out)
                summary["ablation"] = ablations.to_list()
                timings["ablation_s"] = time.perf_counter() - t
        if cfg.run_probes:
            t = time.perf_counter()
            probes = probe_layers(model, corpus, cfg.probes)
            probes.save(out)
            if cfg.sparse_probe_tags and model.cfg.d_mlp is not None and not model.cfg.attn_only:
                from tinyinterp.analysis.probes.sparse import sparse_probe_curve

                try:
                    sparse = sparse_probe_curve(model, corpus, cfg.sparse_probe_tags, max_tokens=cfg.probes.max_tokens,
                                                split_seed=cfg.probes.split_seed)
                except TinyInterpError as exc:
                    log.warning("sparse probes skipped: %s", exc)
                else:
                    write_json(out / "sparse_probes.json", sparse)
                    summary["sparse_probes"] = {tag: {"k_for_0.9": v["k_for_0.9"], "k1_auroc": v["curve"][0]["auroc"],
                                                      "all_neurons_auroc": v["curve"][-1]["auroc"]}
                                                for tag, v in sparse.items()}
            timings["probes_s"] = time.perf_counter() - t
        summary["timings"] = {k: round(v, 2) for k, v in timings.items()}
        summary["config"] = _config_json(cfg)
        write_json(out / "summary.json", summary)
        if cfg.report:
            from tinyinterp.report import write_report

            write_report(out, model=model, heads=heads, neurons=neurons, probes=probes, summary=summary)
    return summary


def _head_axes(model, corpus, cfg: AnalysisConfig, out: Path, progress: bool) -> tuple[dict[str, Any], dict[str, float]]:
    """Output effects, axis labels, paper claim and halves: writes ``heads_axes.json``; returns the summary
    keys and the costs (seconds, kept with the timings)."""
    from tinyinterp.analysis.heads.claims import analyse_heads

    res = analyse_heads(model, corpus, ablation_stories=cfg.head_ablation_stories, halves=cfg.head_halves,
                        progress=progress)
    write_json(out / "heads_axes.json", jsonable(res["heads"]))
    s = res["summary"]
    keys = {"paper_claim": s["paper_claim"],
            "head_axes": {k: s[k] for k in ("labels", "per_layer", "thresholds", "n_stories", "n_boot")}}
    keys["head_axes"]["ablation_stories"] = s["cost"]["ablation_stories"]
    if "label_agreement_halves" in s:
        keys["label_agreement_halves"] = s["label_agreement_halves"]
    return jsonable(keys), s["cost"]


def _neuron_summary(neurons) -> dict[str, Any]:
    df = neurons.to_frame()
    s = dict(neurons.summary)
    if not df.empty:
        sel = df[df["selective"]]
        s["selective_by_tag"] = {str(k): int(v) for k, v in sel.groupby("pos").size().items()}
        s["best_auroc_by_tag"] = {str(k): float(v) for k, v in df.groupby("pos")["auroc"].max().items()}
    if neurons.control is not None:
        cdf = neurons.control.to_frame()
        s["untrained_selective"] = int(cdf["selective"].sum()) if not cdf.empty else 0
    return s


def _identity(model, corpus, cfg: AnalysisConfig, out: Path) -> dict[str, Any]:
    """``neuron_identity.json`` and the summary's ``neuron_identity`` / ``lexical_baseline`` entries."""
    from tinyinterp.analysis.neurons.identity_report import neuron_identity_report

    with eval_mode(model):
        rep = neuron_identity_report(model, corpus, cfg.identity, layers=cfg.neurons.layers,
                                     split_seed=cfg.neurons.split_seed, dense_probe=False, sparse_ks=cfg.identity_sparse_ks)
    write_result_json(out / "neuron_identity.json", rep)
    s = rep["summary"]
    keep = ("auroc", "ap_lift", "ambiguous_auroc", "unseen_auroc")
    return {"neuron_identity": {k: s[k] for k in ("categories_per_tag", "n_candidates", "n_pos_units", "n_token_units",
                                                  "paper_specificity", "beyond_identity_tags")},
            "lexical_baseline": {t: {b: {k: m[k] for k in keep} for b, m in d.items()}
                                 for t, d in s["lexical_baseline"].items()}}


def _ablations(model, corpus, neurons, cfg: AnalysisConfig, progress: bool) -> AblationResults:
    _, held_out = corpus.split(cfg.neurons.split_seed)
    out = []
    for tag in cfg.ablation_tags:
        top = neurons.top_neurons(tag, n=cfg.ablation_neurons)
        if not top:
            continue
        try:
            res = ablation_effect(model, held_out, top, tag, n_random=cfg.ablation_random, progress=progress)
        except TinyInterpError as exc:
            log.warning("ablation for %s skipped: %s", tag, exc)
            continue
        out.append(res)
    return AblationResults(out)


def _config_json(cfg: AnalysisConfig) -> dict[str, Any]:
    return jsonable(asdict(cfg))
