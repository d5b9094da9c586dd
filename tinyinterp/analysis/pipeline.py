"""``analyze()``: the whole analysis of one model on one corpus, written to a folder.

Stages (:data:`STAGES`, each with a progress bar): tag the corpus with spaCy → classify heads
and decide for every neuron × tag tested whether it is a ``pos`` neuron, a ``token`` detector or
``untestable`` (held out, identity tests, story-level statistics, lexical baselines, untrained
control), sharing one forward pass (:func:`heads_and_neurons`) → ablation of each tag's top
neurons (chosen on the selection half, ablated on the held-out half, against random sets matched
on activation variance and output-weight norm) → layer-wise and k-sparse probes with their
lexical baselines → ``report.html``. Each result class writes its own files (``save(folder)``);
the output folder::

    heads.json  heads.csv  heads_meta.json  heads_axes.json
    neurons.json  neurons.csv  neurons_summary.json  neuron_examples.json
    probes.json  sparse_probes.json  ablation.json  summary.json  report.html

Only one analysis may write a folder at a time (an advisory lock, ``.lock``). Results are written
into ``OUT/.staging`` and moved in together, ``complete.json`` last
(:func:`~tinyinterp.analysis.results_io.staged_results`): a killed run leaves the previous
analysis as it was, and readers refuse a folder of two runs.

Under torchrun (``dist`` with ``world > 1``) every rank tags its share of the stories into the tag
store, reads the tagged corpus back and streams its share of the heads + neurons pass
(:mod:`tinyinterp.analysis.distributed`); rank 0 adds the statistics and alone finishes and writes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tinyinterp.analysis.corpus.loading import load_corpus
from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.engine import eval_mode
from tinyinterp.analysis.features.stage import features_stage
from tinyinterp.analysis.heads.classify import HeadConfig, classify_heads
from tinyinterp.analysis.heads.results import HeadResults, label_counts
from tinyinterp.analysis.neurons.config import NeuronConfig
from tinyinterp.analysis.neurons.matched_ablation import AblationConfig, AblationResults, ablation_table
from tinyinterp.analysis.neurons.results import NeuronResults
from tinyinterp.analysis.neurons.selection import find_pos_neurons
from tinyinterp.analysis.probes.dense import ProbeConfig, ProbeResults, probe_layers
from tinyinterp.analysis.probes.sparse import sparse_probe_curve
from tinyinterp.analysis.results_io import folder_lock, jsonable, staged_results
from tinyinterp.analysis.sharding import build_jobs, merged_stats, read_shards
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
    """Tags whose top neurons (selection-half AUROC) are mean-ablated on the held-out half (empty: skip)."""
    ablation_neurons: int = 5
    """Top neurons per tag ablated together."""
    ablation_random: int | None = None
    """Random neuron sets per tag, matched on activation variance and output-weight norm. None: derived from the
    number of ablated tags m, ``2 * ceil(m / 0.05)`` (120 for NOUN/VERB/ADJ; :meth:`AblationConfig.random_sets`), so
    that the smallest p, ``1 / (n + 1)``, survives Benjamini-Hochberg across the m tags."""
    ablation_stories: int | None = 100
    """Held-out stories the ablations run on (None: all); one clean pass over them per batch, then each set is a
    low-rank update of the MLP output (:mod:`~tinyinterp.analysis.neurons.ablation_losses`)."""
    head_effects: bool = True
    """Head output effects (sets ``HeadConfig.output_effects``: direct logit attribution by next-token group and
    attention conditioned on the next token, in the shared pass), then the ablations, the paper claim and the halves
    check (:func:`tinyinterp.analysis.heads.claims.analyse_heads`): ``heads_axes.json`` and ``summary.json`` keys
    ``paper_claim``, ``label_agreement_halves``, ``head_axes``. The head labels come from the two axes either way."""
    head_ablation_stories: int = 100
    """Stories for the mean/resample ablation of every head (two forwards per head, timed apart; 0: skip)."""
    head_halves: bool = True
    """Also label the heads on two disjoint halves of the stories (``label_agreement_halves``; two more passes,
    timed apart)."""
    report: bool = True
    """Write report.html."""
    features: tuple[str, ...] = ()
    """SAE folders (SAELens format, on ``blocks.L.mlp.hook_post`` of this model) whose features go through the
    neuron rules (:mod:`tinyinterp.analysis.features`): ``features.json``/``.csv``, ``features_summary.json``
    and the summary's ``features`` (best neuron vs best feature per tag). Empty: skip."""
    feature_config: Any = None
    """A :class:`~tinyinterp.analysis.features.find.FeatureConfig` (None: defaults); its identity rules and
    split are the analysis' own."""
    sparse_probe_tags: tuple[str, ...] = ABLATION_TAGS
    """Tags whose k-sparse probe curve (how many MLP neurons reach AUROC 0.9) is measured with the probes
    (:mod:`tinyinterp.analysis.probes.sparse`; empty: skip)."""

    def __post_init__(self):
        if self.max_stories is not None and self.max_stories <= 0:
            raise TinyInterpError(f"max_stories={self.max_stories}: must be a positive integer")


def heads_and_neurons(model, corpus: TaggedCorpus, heads: HeadConfig | None = None, neurons: NeuronConfig | None = None,
                      progress: bool = False, keep_activations: bool = False) -> tuple[HeadResults, NeuronResults]:
    """:func:`classify_heads` and :func:`find_pos_neurons` with one shared streaming pass.

    Both analyses calibrate first (their own small passes), then a single forward pass over
    the corpus (selection half, then held-out half; ``min`` of the two ``batch_tokens``) feeds
    the head statistics and the neuron statistics together, so the model's forward runs once
    instead of twice. Results match the separate calls (up to float summation order). The
    untrained control, when configured, is a second model and runs its own pass. The same
    jobs run one shard of the stories in ``analyze --shard`` (:mod:`~tinyinterp.analysis.sharding`).
    ``keep_activations``: leave the neuron job's kept activations on ``NeuronResults.activations`` (exact
    mode), for the features stage to reuse instead of a second forward pass.
    """
    with eval_mode(model):
        jobs = build_jobs(model, corpus, heads or HeadConfig(), neurons or NeuronConfig())
        jobs.neurons.hand_on = keep_activations
        jobs.stream(progress=progress)
        return jobs.finish()


@dataclass
class AnalysisRun:
    """What the stages of one :func:`analyze` share: inputs, the results so far, the summary."""

    model: Any
    corpus: TaggedCorpus
    cfg: AnalysisConfig
    out: Path
    progress: bool
    summary: dict[str, Any]
    stats: Callable[..., tuple[HeadResults, NeuronResults]] = heads_and_neurons  # or the shards' merged sums
    heads: HeadResults | None = None
    neurons: NeuronResults | None = None
    probes: ProbeResults | None = None
    features: Any = None  # FeatureResults when --features ran
    timings: dict[str, float] = field(default_factory=dict)  # a stage's own cost breakdown (seconds)


def _heads_and_neurons(run: AnalysisRun) -> None:
    """One shared forward pass for both analyses (or the shards' sums); saved by the next two stages."""
    kw = {"keep_activations": True} if run.stats is heads_and_neurons and run.cfg.features else {}
    run.heads, run.neurons = run.stats(run.model, run.corpus, run.cfg.heads, run.cfg.neurons, run.progress, **kw)


def _heads(run: AnalysisRun) -> None:
    run.heads = run.heads if run.heads is not None else classify_heads(run.model, run.corpus, run.cfg.heads)
    run.heads.save(run.out)
    run.summary["heads"] = label_counts(r.label for r in run.heads.records)


def _head_axes(run: AnalysisRun) -> None:
    """Output effects, axis labels, paper claim and halves (:mod:`tinyinterp.analysis.heads.claims`):
    ``heads_axes.json`` and the summary's ``paper_claim`` / ``head_axes`` / ``label_agreement_halves``."""
    from tinyinterp.analysis.heads.claims import analyse_heads

    cfg = run.cfg
    res = analyse_heads(run.model, run.corpus, heads=run.heads, config=cfg.heads, ablation_stories=cfg.head_ablation_stories,
                        halves=cfg.head_halves, progress=run.progress)
    write_json(run.out / "heads_axes.json", jsonable(res["heads"]))
    s = res["summary"]
    keys = {"paper_claim": s["paper_claim"],
            "head_axes": {k: s[k] for k in ("labels", "per_layer", "thresholds", "n_stories", "n_boot")}}
    keys["head_axes"]["ablation_stories"] = s["cost"]["ablation_stories"]
    run.timings.update({f"head_{k}": v for k, v in s["cost"].items() if k.endswith("_s")})
    if "label_agreement_halves" in s:
        keys["label_agreement_halves"] = s["label_agreement_halves"]
    run.summary.update(jsonable(keys))


def _neurons(run: AnalysisRun) -> None:
    """``neurons.json`` (the decision), the summary's ``neurons`` / ``lexical_baseline`` entries and the
    decision's own timings (identity rules with their bootstraps, lexical baselines, examples, control)."""
    run.neurons = run.neurons if run.neurons is not None else find_pos_neurons(run.model, run.corpus, run.cfg.neurons)
    run.neurons.save(run.out)
    run.summary["neurons"] = _neuron_summary(run.neurons)
    lex = run.neurons.summary.get("lexical_baseline")
    if lex:
        keep = ("auroc", "ap_lift", "ambiguous_auroc", "unseen_auroc")
        run.summary["lexical_baseline"] = jsonable({t: {b: {k: m[k] for k in keep} for b, m in d.items()}
                                                    for t, d in lex.items()})
    run.timings.update({f"neurons_{k}": v for k, v in run.neurons.timings.items()})


def _ablation(run: AnalysisRun) -> None:
    """Each tag's top neurons (selection half) mean-ablated on the held-out half against matched random sets."""
    cfg = run.cfg
    tags = tuple(t for t in cfg.ablation_tags if t in run.neurons.summary["tags"])
    if run.neurons.selection is None or not tags:
        log.warning("ablation skipped: %s", "no selection-half statistics" if tags else "no ablation tag in the corpus")
        return
    acfg = AblationConfig(n_units=cfg.ablation_neurons, n_random=cfg.ablation_random, max_stories=cfg.ablation_stories,
                          tags=tags, batch_tokens=cfg.neurons.batch_tokens)
    try:
        rows = ablation_table(run.model, run.corpus, run.neurons.selection, acfg, run.progress)
    except TinyInterpError as exc:
        log.warning("ablation skipped: %s", exc)
        return
    AblationResults(rows).save(run.out)
    run.summary["ablation"] = jsonable(rows)


def _probes(run: AnalysisRun) -> None:
    """Dense probes at every site, then the k-sparse probe curves from the MLP neurons."""
    model, cfg = run.model, run.cfg
    run.probes = probe_layers(model, run.corpus, cfg.probes)
    run.probes.save(run.out)
    if not cfg.sparse_probe_tags or model.cfg.d_mlp is None or model.cfg.attn_only:
        return
    try:
        sparse = sparse_probe_curve(model, run.corpus, cfg.sparse_probe_tags, max_tokens=cfg.probes.max_tokens,
                                    split_seed=cfg.probes.split_seed)
    except TinyInterpError as exc:
        log.warning("sparse probes skipped: %s", exc)
    else:
        sparse.save(run.out)
        run.summary["sparse_probes"] = sparse.headline()


# (timing key, whether the config runs it, the stage), in order; each stage reads and extends the run
STAGES: list[tuple[str, Callable[[AnalysisConfig], bool], Callable[[AnalysisRun], None]]] = [
    ("heads_and_neurons_s", lambda c: c.run_heads and c.run_neurons, _heads_and_neurons),
    ("heads_s", lambda c: c.run_heads, _heads),
    ("head_claims_s", lambda c: c.run_heads and c.head_effects, _head_axes),  # ablations + claim + halves
    ("neurons_s", lambda c: c.run_neurons, _neurons),
    ("ablation_s", lambda c: c.run_neurons and bool(c.ablation_tags), _ablation),
    ("probes_s", lambda c: c.run_probes, _probes),
    ("features_s", lambda c: bool(c.features), features_stage),
]


def analyze(model, corpus: TaggedCorpus | str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
            config: AnalysisConfig | None = None, model_name: str = "model", progress: bool = True,
            shards: Sequence[str | os.PathLike] | None = None, dist=None) -> dict[str, Any]:
    """Run every analysis stage (:data:`STAGES`) of ``model`` on ``corpus`` and write the results to ``out``.

    ``corpus``: a :class:`TaggedCorpus` (e.g. from :func:`tinyinterp.corpus_from_texts`), or paths read
    with :func:`tinyinterp.load_corpus` (at most ``config.max_stories``). ``config`` is not modified.
    ``shards``: folders written by ``analyze --shard i/n`` (:mod:`tinyinterp.analysis.sharding`) for
    this model and corpus; their statistics are added instead of running the heads + neurons pass.
    ``dist``: a :class:`~tinyinterp.training.distributed.DistInfo` when started by torchrun; every
    rank calls ``analyze`` alike, rank 0 writes ``out`` and returns the summary (the others ``{}``).
    Returns the summary written to ``summary.json``.
    """
    cfg = config or AnalysisConfig()
    cfg = dataclasses.replace(cfg, heads=dataclasses.replace(cfg.heads, progress=progress,  # the caller's stay as given
                                                             output_effects=cfg.head_effects and cfg.run_heads),
                              neurons=dataclasses.replace(cfg.neurons, progress=progress),
                              probes=dataclasses.replace(cfg.probes, progress=progress))
    out = Path(out)
    if shards and not (cfg.run_heads and cfg.run_neurons):
        raise TinyInterpError("merging shards needs both the head and the neuron analysis (drop --no-heads/--no-neurons)")
    ranks = dist is not None and dist.enabled
    if shards or ranks:  # shards and ranks stream: the identity tests that need every token are reported untestable
        cfg = dataclasses.replace(cfg, neurons=dataclasses.replace(cfg.neurons, in_memory=False))
    if ranks:
        from tinyinterp.analysis.distributed import distributed_stats, rank_corpus

        if shards or not (cfg.run_heads and cfg.run_neurons):
            raise TinyInterpError("a torchrun analysis needs both the head and the neuron analysis and no shards "
                                  "(drop --no-heads/--no-neurons)")
        if not dist.is_main:  # stream this rank's share; rank 0 finishes and writes
            distributed_stats(dist)(model, rank_corpus(model, corpus, cfg.max_stories, dist, neurons=cfg.neurons),
                                    cfg.heads, cfg.neurons)
            return {}
    with folder_lock(out), staged_results(out, {"model": model_name}) as staging:
        t = time.perf_counter()
        if ranks:
            corpus = rank_corpus(model, corpus, cfg.max_stories, dist, progress, cfg.neurons)
        elif not isinstance(corpus, TaggedCorpus):
            corpus = load_corpus(corpus, model, max_stories=cfg.max_stories, progress=progress)
        timings = {"tagging_s": time.perf_counter() - t}
        summary: dict[str, Any] = {
            "model": model_name, "n_layers": model.cfg.n_layers, "n_heads": model.cfg.n_heads, "d_mlp": model.cfg.d_mlp,
            "corpus": {"stories": len(corpus), "tokens": corpus.n_tokens, "spacy_model": corpus.spacy_model,
                       "alignment_coverage": corpus.coverage},
        }
        run = AnalysisRun(model, corpus, cfg, staging, progress, summary)  # stages write into the staging folder
        if shards:
            metas = read_shards(shards)
            summary["shards"] = [m["dir"] for m in metas]
            run.stats = merged_stats(model, corpus, metas, cfg.heads, cfg.neurons)
        if ranks:
            summary["ranks"] = dist.world
            run.stats = distributed_stats(dist)
        for key, wanted, stage in STAGES:
            if wanted(cfg):
                t = time.perf_counter()
                stage(run)
                timings[key] = time.perf_counter() - t
        timings.update(run.timings)
        summary["timings"] = {k: round(v, 2) for k, v in timings.items()}
        summary["config"] = jsonable({k: v for k, v in asdict(cfg).items()  # without --features: as before
                                      if v or k not in ("features", "feature_config")})
        write_json(staging / "summary.json", summary)
        if cfg.report:
            from tinyinterp.report import write_report

            write_report(staging, model=model, heads=run.heads, neurons=run.neurons, probes=run.probes, summary=summary)
    return summary


def _neuron_summary(neurons: NeuronResults) -> dict[str, Any]:
    """The neuron summary without what is long (config, per-unit paper-form list, full lexical metrics, timings)."""
    s = {k: v for k, v in neurons.summary.items() if k not in ("config", "lexical_baseline")}
    if "paper_specificity" in s:
        s["paper_specificity"] = {k: v for k, v in s["paper_specificity"].items() if k != "units"}
    return jsonable(s)
