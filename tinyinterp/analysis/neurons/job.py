"""The neuron analysis as a job: preparation, a streaming pass consumer, and the decision.

:class:`NeuronJob` prepares (labels, the story split), then takes every batch of a
:func:`~tinyinterp.analysis.engine.run_pass` inside the MLP hooks. With ``in_memory`` (the
default, never in shards) it copies every analysed token's activations into one preallocated
array (:class:`~tinyinterp.analysis.neurons.kept.KeptActivations`) and counts tags, and
:meth:`NeuronJob.finish` computes everything exactly from them: the identity rules
(:mod:`~tinyinterp.analysis.neurons.decision`), the selection half's AUROC and moments (what the
ablation ranks and matches on), the held-out moments and the examples' top-k. Streaming
(``in_memory=False``, shards, torchrun): quantile bin edges from a calibration sample of the
selection half, then fixed-size, mergeable statistics per batch (selection and held-out
:class:`TagStats`, the held-out top-k buffer and exact-tail AP histogram); the decision then says
which tests were untestable. The untrained control (:meth:`NeuronJob.control_job`) is the same
job on a randomly initialised twin.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch

from tinyinterp.analysis.corpus.labels import CorpusLabels, label_corpus
from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.engine import eval_mode, mlp_hook, run_pass, stream_activations
from tinyinterp.analysis.heap import TRIM_EVERY
from tinyinterp.analysis.neurons.config import NeuronConfig
from tinyinterp.analysis.neurons.controls import example_neurons, examples_for, logit_effects, top_from_kept, untrained_copy
from tinyinterp.analysis.neurons.decision import (STREAMING_UNTESTABLE, category_summary, exact_rows, held_out_moments,
                                                  sort_rows, streaming_rows)
from tinyinterp.analysis.neurons.identity import classify_units
from tinyinterp.analysis.neurons.kept import KeptActivations
from tinyinterp.analysis.neurons.matched_ablation import SelectionStats
from tinyinterp.analysis.neurons.results import NeuronResults
from tinyinterp.analysis.neurons.stats import Binner, TagStats, quantile_edges, run_tests
from tinyinterp.analysis.neurons.tail_ap import TailHistogram
from tinyinterp.analysis.neurons.topk import TopKBuffer
from tinyinterp.analysis.neurons.units import UnitActivations
from tinyinterp.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _edges(model, corpus, labels, indices, hooks, cfg: NeuronConfig, split=None) -> torch.Tensor:
    """Per-unit quantile bin edges from up to ``calib_tokens`` analysed tokens of random stories of ``indices``.

    ``split`` (a :class:`~tinyinterp.analysis.distributed.RankSplit`, under torchrun): each rank runs its share
    of the sampled stories, rank 0 puts their activations in the one-process order (stories sorted by length,
    as the batches run them), cuts the same ``calib_tokens`` and sends the edges to every rank."""
    take = labels.sample_stories(indices, cfg.calib_tokens, cfg.split_seed + 1)
    if split is None:
        return quantile_edges(_calibrate(model, corpus, labels, take, hooks, cfg), cfg.n_bins)
    parts = {}
    for bt in stream_activations(model, corpus, hooks, cfg.batch_tokens, indices=take[split.owns(take)], desc="calibrate"):
        b, p, _, _ = labels.analysed(bt.stories, bt.mask)
        dev = bt.acts[hooks[0]].device
        acts = torch.cat([bt.acts[h][b.to(dev), p.to(dev)] for h in hooks], dim=1).cpu()  # [tok, unit], by row then pos
        for row in b.unique().tolist():
            parts[int(bt.stories[row])] = acts[b == row]
    gathered = split.gather(parts)
    edges = None
    if gathered is not None:  # rank 0
        parts = {k: v for g in gathered for k, v in g.items()}
        lengths = corpus.lengths() if corpus.share is None else corpus.share.lengths
        order = take[np.argsort(np.minimum(lengths, model.cfg.n_ctx)[take], kind="stable")]
        sample = torch.cat([parts[i] for i in order.tolist() if i in parts] or [torch.zeros((0, 1))])
        edges = quantile_edges(sample[: cfg.calib_tokens], cfg.n_bins).cpu()
    del parts, gathered
    return split.broadcast(edges).to(next(model.parameters()).device)


def _calibrate(model, corpus, labels, take, hooks, cfg: NeuronConfig) -> torch.Tensor:
    """Activations of up to ``calib_tokens`` analysed tokens of the stories ``take``, in one process."""
    sample, n = None, 0
    for bt in stream_activations(model, corpus, hooks, cfg.batch_tokens, indices=take, desc="calibrate"):
        b, p, _, _ = labels.analysed(bt.stories, bt.mask)
        dev = bt.acts[hooks[0]].device
        acts = torch.cat([bt.acts[h][b.to(dev), p.to(dev)] for h in hooks], dim=1)[: cfg.calib_tokens - n]  # [tok, unit]
        if sample is None:  # filled in place: no list of parts and concatenated copy
            sample = torch.empty((cfg.calib_tokens, acts.shape[1]), dtype=torch.float32, device=acts.device)
        sample[n:n + len(acts)] = acts
        n += len(acts)
    return sample[:n] if sample is not None else torch.zeros((0, 1))


def _layers(model, cfg: NeuronConfig) -> list[int]:
    layers = list(range(model.cfg.n_layers)) if cfg.layers is None else cfg.layers
    bad = [x for x in layers if not 0 <= x < model.cfg.n_layers]
    if bad:
        raise ConfigError(f"NeuronConfig.layers: {bad} out of range for a {model.cfg.n_layers}-layer model")
    if model.cfg.d_mlp is None or model.cfg.attn_only:
        raise ConfigError("model has no MLP layers; neuron analysis needs d_mlp")
    return layers


class NeuronJob:
    """Preparation on construction; :meth:`batch_hooks` for :func:`run_pass` over :attr:`groups`
    (0: selection half, 1: held-out half); :meth:`finish` for the results. Build it in eval mode."""

    def __init__(self, model, corpus: TaggedCorpus, cfg: NeuronConfig, label: str = "neurons",
                 labels: CorpusLabels | None = None, baselines: bool = True, split=None):
        if len(corpus) < 4:
            raise DataError(f"corpus has {len(corpus)} stories; neuron analysis needs at least 4 (two halves)")
        self.model, self.corpus, self.cfg, self.label, self.baselines = model, corpus, cfg, label, baselines
        self.layers = _layers(model, cfg)
        self.hook_names = [mlp_hook(x) for x in self.layers]
        # ``labels``: label_corpus(corpus) with these options, when the caller has it (the untrained control shares it)
        if labels is None:  # a rank's share (torchrun) is labelled in the corpus-wide vocabulary of the pre-pass
            labels = (label_corpus(corpus, cfg.include_continuations, cfg.exclude_tags) if corpus.share is None
                      else corpus.share.labels(corpus, cfg.include_continuations, cfg.exclude_tags))
        self.labels = labels
        n_tags = len(self.labels.tags)
        if n_tags < 2:
            raise DataError(f"corpus has {n_tags} analysable tag(s) ({self.labels.tags}); need at least 2")
        self.sel_idx, self.out_idx = corpus.split_indices(cfg.split_seed)
        self.groups = [self.sel_idx, self.out_idx]
        self.split = split  # a RankSplit under torchrun: the calibration runs split over the ranks
        n_units, n_upper = len(self.layers) * model.cfg.d_mlp, int((self.labels.flat_tags >= 0).sum())
        need_gb = n_upper * n_units * 4 / 2 ** 30  # upper bound (before n_ctx cuts)
        keep = cfg.in_memory and need_gb <= cfg.max_memory_gb
        if cfg.in_memory and not keep:
            log.warning("%s: keeping every token's activations needs ~%.1f GB > max_memory_gb=%g; streaming instead "
                        "(identity tests untestable)", label, need_gb, cfg.max_memory_gb)
        # in memory (exact mode): every analysed token's activations and labels, filled in place; the decision, the
        # selection-half statistics and the examples' top-k are computed from them in finish(), so the pass only
        # copies and counts. Streaming: bin edges from a calibration sample, histograms and moments of both halves,
        # the held-out top-k and the exact-tail AP histogram, all fixed-size and mergeable.
        self.kept: KeptActivations | None = KeptActivations(n_upper, n_units) if keep else None
        self.support = torch.zeros((2, n_tags), dtype=torch.long)  # analysed tokens per half and tag (exact mode)
        self.stats = self.top = self.tail = None
        if not keep:
            edges = _edges(model, corpus, self.labels, self.sel_idx, self.hook_names, cfg, split)  # [unit, n_bins + 1]
            shift = edges[:, edges.shape[1] // 2]  # ≈ median: centres the moment sums
            binner = Binner(edges, stride=n_tags * (edges.shape[1] + 1))
            self.stats = (TagStats(edges, shift, n_tags, binner=binner), TagStats(edges, shift, n_tags, binner=binner))
            self.top = TopKBuffer(edges.shape[0], cfg.identity.top_k, edges.device)
            self.tail = TailHistogram(edges, n_tags, cfg.tail)
        self.control_result: NeuronResults | None = None  # set to skip the untrained control's own pass in finish()
        self.hand_on = False  # set: finish() leaves the kept activations on the results (the features stage reuses them)

    def control_corpus(self) -> TaggedCorpus:
        """The stories the untrained control analyses (the first ``control_max_stories``)."""
        n = len(self.corpus) if self.cfg.control_max_stories is None else min(len(self.corpus), self.cfg.control_max_stories)
        if n < len(self.corpus) and self.corpus.share is not None:  # the pre-pass counted the whole corpus only
            raise ConfigError("NeuronConfig.control_max_stories: a rank holding only its share cannot label a subset; "
                              "give every rank the whole corpus (tinyinterp.analysis.distributed.rank_corpus does)")
        return self.corpus if n == len(self.corpus) else self.corpus.subset(np.arange(n))

    def batch_hooks(self, batch) -> list:
        """One hook per analysed MLP layer; the last one folds the batch's analysed tokens in."""
        b, p, tags, words = self.labels.analysed(batch.stories, batch.mask)
        dev = batch.tokens.device
        bd, pd = b.to(dev), p.to(dev)
        parts: dict[str, torch.Tensor] = {}
        names = self.hook_names

        flat = b * batch.tokens.shape[1] + p  # analysed tokens as rows of the flattened [batch * pos] activations

        def hook(act: torch.Tensor, hook) -> None:
            parts[hook.name] = act if self.kept is not None else act[bd, pd]  # [batch, pos, d_mlp] / [tok, d_mlp]
            if len(parts) < len(names):
                return
            if self.kept is not None:  # exact mode: keep and count; everything else is computed in finish()
                self.support[batch.group] += torch.bincount(tags, minlength=self.support.shape[1])
                self.kept.add_gathered([parts[h] for h in names], flat, tags.numpy(), words.numpy(),
                                       batch.tokens[bd, pd].cpu().numpy(), np.asarray(batch.stories)[b.numpy()],
                                       p.numpy(), batch.group == 0)
            else:
                acts = parts[names[0]] if len(names) == 1 else torch.cat([parts[h] for h in names], dim=1)
                x = acts.T.float().contiguous()  # [unit, tok]: one transpose serves the statistics and the top-k
                self.stats[batch.group].update_units(x, tags.to(dev))
                if batch.group == 1:
                    self.top.update_units(x, torch.as_tensor(batch.stories)[b], p)
                    self.tail.update(x, tags.to(dev))
            parts.clear()

        return [(h, hook) for h in names]

    def unit_activations(self) -> UnitActivations:
        """The kept activations with their labels (``in_memory`` runs, after the pass)."""
        if self.kept is None or not len(self.kept):
            raise ConfigError("NeuronJob.unit_activations: no activations kept (in_memory=False, or no pass yet)")
        kept, d_mlp = self.kept, self.model.cfg.d_mlp
        self.kept = KeptActivations(0, kept.n_units)  # hand the memory over (views of the filled rows, no copy)
        return kept.unit_activations(
            tag_names=list(self.labels.tags), word_names=list(self.labels.words),
            unit_names=[f"L{x}.N{n}" for x in self.layers for n in range(d_mlp)],
            unit_meta={"layer": np.repeat(self.layers, d_mlp), "neuron": np.tile(np.arange(d_mlp), len(self.layers))})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What the pass accumulated: both halves' :class:`TagStats` (``sel.*``, ``out.*``), the top-k (``top.*``)
        and the tail histogram (``tail.*``). Streaming jobs only: kept activations are not a mergeable sum."""
        if self.kept is not None:
            raise ConfigError("NeuronConfig.in_memory=True cannot be sharded; shards stream (in_memory=False)")
        out = {f"{half}.{k}": v for half, st in zip(("sel", "out"), self.stats) for k, v in st.state_dict().items()}
        out.update({f"top.{k}": v for k, v in self.top.state_dict().items()})
        out.update({f"tail.{k}": v for k, v in self.tail.state_dict().items()})
        return out

    def merge_state(self, state: dict[str, torch.Tensor]) -> None:
        """Add the :meth:`state_dict` of the same job run over other stories (a shard)."""
        for half, st in zip(("sel", "out"), self.stats):
            st.merge_state({k.partition(".")[2]: v for k, v in state.items() if k.startswith(f"{half}.")})
        self.top.merge_state({k.partition(".")[2]: v for k, v in state.items() if k.startswith("top.")})
        self.tail.merge_state({k.partition(".")[2]: v for k, v in state.items() if k.startswith("tail.")})

    def control_job(self) -> "NeuronJob | None":
        """The untrained control: this job's analysis (no control of its own, no examples, no lexical baselines)
        of a randomly initialised twin of the model on :meth:`control_corpus`; None when switched off."""
        if not self.cfg.untrained_control:
            return None
        twin = untrained_copy(self.model, self.cfg.control_seed)
        ctrl_cfg = dataclasses.replace(self.cfg, untrained_control=False, n_examples=0)
        ctrl_corpus = self.control_corpus()
        return NeuronJob(twin, ctrl_corpus, ctrl_cfg, label="untrained control",
                         labels=self.labels if ctrl_corpus is self.corpus else None, baselines=False, split=self.split)

    def run(self) -> NeuronResults:
        """Stream :attr:`groups` through the model with this job alone, then :meth:`finish`."""
        run_pass(self.model, self.corpus, [self], self.groups, self.cfg.batch_tokens, self.cfg.progress,
                 f"{self.label}: selection + held-out", TRIM_EVERY if self.kept is not None else 1)
        return self.finish()

    def finish(self) -> NeuronResults:
        """The decision (exact or streaming), examples and the untrained control, from what the pass kept."""
        cfg, labels, idc = self.cfg, self.labels, self.cfg.identity
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        extra: dict = {}
        ua = pos = None
        if self.kept is not None:
            pos = self.kept.positions()
            ua = self.unit_activations()
            t1 = time.perf_counter()
            ident = classify_units(ua, idc)
            timings["identity_rules_s"] = time.perf_counter() - t1
            boot = {"bootstrap_s": ident.timings.get("bootstrap_s", 0.0)}
            lexical = {}
            if self.baselines:
                from tinyinterp.analysis.neurons.baselines import lexical_baseline

                t1 = time.perf_counter()
                lexical = lexical_baseline(ua, self.model.W_E.detach().cpu().numpy(), idc, timings=boot)
                timings["lexical_baselines_s"] = time.perf_counter() - t1
            timings["decision_bootstraps_s"] = boot["bootstrap_s"]  # story/token-id resampling, inside the two above
            tag_idx = {t: i for i, t in enumerate(labels.tags)}
            moments = held_out_moments(ua, [(r["unit"], tag_idx[r["tag"]]) for r in ident.rows], idc.min_support)
            rows = exact_rows(ident, moments, lexical)
            extra = {"paper_specificity": _paper(ident), "n_ambiguous_tests": ident.summary["n_ambiguous_tests"]}
            if lexical:
                extra["lexical_baseline"] = lexical
            selection = self._selection_stats(*ident.selection_moments, ident.selection_auroc)
            mode = "exact"
        else:
            sel, rep = run_tests(self.stats[0], idc.min_support), run_tests(self.stats[1], idc.min_support)
            st, n = self.stats[0], max(self.stats[0].n_tokens, 1)
            m = st.sum.sum(1).cpu().numpy() / n  # streamed moments, shifted by the bins' median
            selection = self._selection_stats(st.shift.cpu().numpy() + m,
                                              np.maximum(st.sumsq.sum(1).cpu().numpy() / n - m ** 2, 0), sel.auroc)
            ap = self.tail.average_precision()
            rows = streaming_rows(sel, rep, ap, _top_k_controls(self.top, labels), labels.tags, self.layers,
                                  self.model.cfg.d_mlp, idc)
            extra = {"untestable_why": f"unseen token ids, ambiguous words, story bootstrap: {STREAMING_UNTESTABLE}"}
            mode = "streaming"
        rows = sort_rows(rows)
        self._add_logits(rows)
        timings["decision_s"] = time.perf_counter() - t0
        res = NeuronResults(rows=rows, summary={**self._summary(mode), **category_summary(rows, labels.tags), **extra})
        res.selection = selection
        if cfg.n_examples:
            t0 = time.perf_counter()
            top = self.top if ua is None else self._top_from_kept(res, ua, pos)
            res.examples = examples_for(self.model, self.corpus, res, top, self.layers, cfg)
            timings["examples_s"] = time.perf_counter() - t0
        res.activations = ua if self.hand_on else None
        del ua, pos
        if cfg.untrained_control:
            t0 = time.perf_counter()
            res.control = self.control_result if self.control_result is not None else self.control_job().run()
            c = res.control.summary
            res.summary["untrained_control"] = {k: c[k] for k in (
                "categories_per_tag", "pos_per_tag", "n_pos_neurons", "n_token_neurons", "n_untestable_neurons",
                "n_candidates", "n_stories", "mode")}
            timings["control_s"] = time.perf_counter() - t0
            log.info("untrained control: %d pos neuron(s)", c["n_pos_neurons"])
        res.timings = {k: round(v, 3) for k, v in timings.items()}
        log.info("neurons: %d candidate row(s); %d pos, %d token neuron(s) (%s)", len(rows), res.summary["n_pos_neurons"],
                 res.summary["n_token_neurons"], mode)
        return res

    def _top_from_kept(self, res: NeuronResults, ua: UnitActivations, pos: np.ndarray) -> TopKBuffer:
        """The held-out top-k of the neurons that get examples, from the kept activations (exact mode)."""
        d_mlp = self.model.cfg.d_mlp
        units = [self.layers.index(layer) * d_mlp + n for layer, n in example_neurons(res, self.cfg.max_example_neurons)]
        return top_from_kept(ua, pos, units, self.cfg.identity.top_k)

    def _selection_stats(self, mean: np.ndarray, variance: np.ndarray, auroc: np.ndarray) -> SelectionStats:
        """Selection-half mean and variance per neuron and AUROC per neuron x tag (exact from the kept activations,
        or streamed moments and binned AUROC): what the ablation ranks, ablates to and matches on."""
        d_mlp = self.model.cfg.d_mlp
        return SelectionStats(layer=np.repeat(self.layers, d_mlp), neuron=np.tile(np.arange(d_mlp), len(self.layers)),
                              mean=mean, variance=variance, held_out=np.asarray(self.out_idx),
                              tag_names=list(self.labels.tags), auroc=auroc)

    def _add_logits(self, rows: list[dict]) -> None:
        keys = sorted({(r["layer"], r["neuron"]) for r in rows})
        logits = logit_effects(self.model, keys, self.cfg.n_logit_tokens)
        for r in rows:
            r.update(logits.get((r["layer"], r["neuron"]), {}))

    def _summary(self, mode: str) -> dict:
        cfg, labels, corpus, model, idc = self.cfg, self.labels, self.corpus, self.model, self.cfg.identity
        if self.kept is None:
            n_select, support = self.stats[0].n_tokens, self.stats[1].support
        else:  # exact mode: counted in the hook
            n_select, support = int(self.support[0].sum()), self.support[1].numpy()
        how = ("exact AUROC/AP on every held-out token; story-bootstrap CIs and Wald p (vs 0.5), BH over every row; "
               "identity tests (unseen token ids, within-identity ambiguous words, word types at the top)"
               if mode == "exact" else
               f"binned AUROC ({cfg.n_bins} quantile bins); AP with the top {cfg.tail} activations per neuron exact; "
               "word types at the top from the top-k buffer; no story-level inference")
        return {
            "mode": mode, "method": how,
            "n_stories": len(corpus), "n_stories_select": len(self.sel_idx), "n_stories_held_out": len(self.out_idx),
            "n_tokens_select": n_select, "n_tokens_held_out": int(support.sum()),
            "truncated_stories": int((corpus.lengths() > model.cfg.n_ctx).sum()),
            "layers": self.layers, "d_mlp": model.cfg.d_mlp, "n_neurons": len(self.layers) * model.cfg.d_mlp,
            "tags": labels.tags,
            "tag_support_held_out": dict(zip(labels.tags, support.tolist())),
            "tag_word_types": dict(zip(labels.tags, (labels.tag_counts > 0).sum(0).tolist())),  # whole corpus
            "auroc_threshold": idc.auroc_threshold, "fdr": idc.fdr,
            "config": dataclasses.asdict(cfg),
        }


def _paper(ident) -> dict:
    """The paper-form specificity summary, with the passing neurons listed."""
    out = dict(ident.summary["paper_specificity"])
    out["units"] = [{k: p[k] for k in p if k != "unit"} for p in ident.paper if p["passes"]]
    return out


def _top_k_controls(top: TopKBuffer, labels: CorpusLabels) -> dict[str, np.ndarray]:
    """Per unit, from the held-out top-k (exact values from the buffer): each entry's tag and whether it is
    filled, and ``n_types [unit, tag]``: distinct word types carrying the tag among the top-k."""
    top_story, top_pos = top.story.cpu().numpy(), top.pos.cpu().numpy()  # [unit, k]
    top_tag = np.full(top_story.shape, -1)
    top_word = np.full(top_story.shape, -1)
    filled = top_story >= 0
    for u, j in zip(*filled.nonzero()):  # units × k lookups, independent of corpus size
        top_tag[u, j] = labels.tag_ids[top_story[u, j]][top_pos[u, j]]
        top_word[u, j] = labels.word_ids[top_story[u, j]][top_pos[u, j]]
    n_types = np.zeros((top_story.shape[0], len(labels.tags)), dtype=np.int64)
    for u in range(top_story.shape[0]):
        pairs = {(t, w) for t, w in zip(top_tag[u].tolist(), top_word[u].tolist()) if t >= 0}
        for t, _ in pairs:
            n_types[u, t] += 1
    return {"tag": top_tag, "filled": filled, "n_types": n_types}


def neuron_activations(model, corpus: TaggedCorpus, cfg: NeuronConfig | None = None) -> UnitActivations:
    """Every analysed token's MLP-neuron activations with their labels, as the neuron analysis keeps them
    (``cfg.layers``, ``split_seed``, continuations; memory ``4 * tokens * neurons`` bytes)."""
    cfg = dataclasses.replace(cfg or NeuronConfig(), in_memory=True, untrained_control=False, n_examples=0)
    with eval_mode(model):
        job = NeuronJob(model, corpus, cfg)
        run_pass(model, corpus, [job], job.groups, cfg.batch_tokens, cfg.progress, "neuron activations")
    return job.unit_activations()


def run_neuron_job(model, corpus: TaggedCorpus, cfg: NeuronConfig, label: str = "neurons",
                   labels: CorpusLabels | None = None) -> NeuronResults:
    """Build a :class:`NeuronJob` with ``model`` in eval mode and :meth:`~NeuronJob.run` it."""
    with eval_mode(model):
        return NeuronJob(model, corpus, cfg, label, labels).run()
