"""The neuron analysis as a job: preparation, a streaming pass consumer, and the final tests.

:class:`NeuronJob` prepares (labels, the story split, quantile bin edges from a calibration
sample of the selection half), then folds every batch of a
:func:`~tinyinterp.analysis.engine.run_pass` into fixed-size statistics inside the MLP hooks
(selection half → selection :class:`TagStats`; held-out half → held-out :class:`TagStats` and
the top-k buffer), and :meth:`NeuronJob.finish` turns them into :class:`NeuronResults`:
tests, FDR, the token-identity controls, examples and the untrained control
(:meth:`NeuronJob.control_job`, the same job on a randomly initialised twin).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import torch

from tinyinterp.analysis.corpus.labels import CorpusLabels, label_corpus
from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.engine import eval_mode, mlp_hook, run_pass, stream_activations
from tinyinterp.analysis.neurons.config import NeuronConfig
from tinyinterp.analysis.neurons.controls import examples_for, logit_effects, untrained_copy
from tinyinterp.analysis.neurons.results import NeuronResults
from tinyinterp.analysis.neurons.stats import Binner, TagStats, TagTests, quantile_edges, run_tests
from tinyinterp.analysis.neurons.topk import TopKBuffer
from tinyinterp.analysis.stats import bh_qvalues
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
                 labels: CorpusLabels | None = None, split=None):
        if len(corpus) < 4:
            raise DataError(f"corpus has {len(corpus)} stories; neuron analysis needs at least 4 (two halves)")
        self.model, self.corpus, self.cfg, self.label = model, corpus, cfg, label
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
        edges = _edges(model, corpus, self.labels, self.sel_idx, self.hook_names, cfg, split)  # [unit, n_bins + 1]
        shift = edges[:, edges.shape[1] // 2]  # ≈ median: centres the moment sums
        binner = Binner(edges, stride=n_tags * (edges.shape[1] + 1))
        self.stats = (TagStats(edges, shift, n_tags, binner=binner),
                      TagStats(edges, shift, n_tags, self.labels.ambiguous(cfg.ambiguous_min_count), binner=binner))
        self.top = TopKBuffer(edges.shape[0], cfg.top_k, edges.device)
        self.control_result: NeuronResults | None = None  # set to skip the untrained control's own pass in finish()

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

        def hook(act: torch.Tensor, hook) -> None:
            parts[hook.name] = act[bd, pd]  # [tok, d_mlp]
            if len(parts) < len(names):
                return
            acts = parts[names[0]] if len(names) == 1 else torch.cat([parts[h] for h in names], dim=1)
            x = acts.T.float().contiguous()  # [unit, tok]: one transpose serves the statistics and the top-k
            self.stats[batch.group].update_units(x, tags.to(dev), words.to(dev))
            if batch.group == 1:
                self.top.update_units(x, torch.as_tensor(batch.stories)[b], p)
            parts.clear()

        return [(h, hook) for h in names]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What the pass accumulated: both halves' :class:`TagStats` (``sel.*``, ``out.*``) and the top-k (``top.*``)."""
        out = {f"{half}.{k}": v for half, st in zip(("sel", "out"), self.stats) for k, v in st.state_dict().items()}
        out.update({f"top.{k}": v for k, v in self.top.state_dict().items()})
        return out

    def merge_state(self, state: dict[str, torch.Tensor]) -> None:
        """Add the :meth:`state_dict` of the same job run over other stories (a shard)."""
        for half, st in zip(("sel", "out"), self.stats):
            st.merge_state({k.partition(".")[2]: v for k, v in state.items() if k.startswith(f"{half}.")})
        self.top.merge_state({k.partition(".")[2]: v for k, v in state.items() if k.startswith("top.")})

    def control_job(self) -> "NeuronJob | None":
        """The untrained control: this job's analysis (no control of its own, no examples) of a randomly
        initialised twin of the model on :meth:`control_corpus`; None when the config switches it off."""
        if not self.cfg.untrained_control:
            return None
        twin = untrained_copy(self.model, self.cfg.control_seed)
        ctrl_cfg = dataclasses.replace(self.cfg, untrained_control=False, n_examples=0)
        ctrl_corpus = self.control_corpus()
        return NeuronJob(twin, ctrl_corpus, ctrl_cfg, label="untrained control",
                         labels=self.labels if ctrl_corpus is self.corpus else None, split=self.split)

    def run(self) -> NeuronResults:
        """Stream :attr:`groups` through the model with this job alone, then :meth:`finish`."""
        run_pass(self.model, self.corpus, [self], self.groups, self.cfg.batch_tokens, self.cfg.progress,
                 f"{self.label}: selection + held-out")
        return self.finish()

    def finish(self) -> NeuronResults:
        """Tests, FDR, controls, examples (and the untrained control) from the accumulated statistics."""
        cfg, labels = self.cfg, self.labels
        sel = run_tests(self.stats[0], cfg.min_support)
        rep = run_tests(self.stats[1], cfg.min_support, cfg.ambiguous_min_support)
        q = bh_qvalues(rep.p_value)  # over every held-out neuron × tag test with support
        dec = _decide(sel, rep, q, cfg)
        rows = self._rows(sel, rep, q, dec)
        res = NeuronResults(rows=rows, summary=self._summary(rep, q, dec))
        if cfg.n_examples:
            res.examples = examples_for(self.model, self.corpus, res, self.top, self.layers, cfg)
        if cfg.untrained_control:
            res.control = self.control_result if self.control_result is not None else self.control_job().run()
            res.summary["untrained_control"] = {k: res.control.summary[k] for k in (
                "n_selective", "n_selective_neurons", "selective_per_tag", "n_discoveries", "discovery_rate", "n_tests",
                "n_stories")}
            log.info("untrained control: %d selective neuron(s)", res.control.summary["n_selective_neurons"])
        log.info("neurons: %d selective neuron x tag pair(s) of %d tests", res.summary["n_selective"], dec["n_valid"])
        return res

    def _rows(self, sel: TagTests, rep: TagTests, q: np.ndarray, dec: dict) -> list[dict]:
        """One row per kept neuron × tag (see :class:`NeuronConfig` ``rows``), selective first, best AUROC next."""
        labels, layers, d_mlp = self.labels, self.layers, self.model.cfg.d_mlp
        units, tag_ids = dec["keep"].nonzero()
        top = _top_k_controls(self.top, labels)
        logits = logit_effects(self.model, [(layers[u // d_mlp], u % d_mlp) for u in sorted(set(units.tolist()))],
                               self.cfg.n_logit_tokens)
        rows = []
        for u, t in zip(units.tolist(), tag_ids.tolist()):
            layer, neuron = layers[u // d_mlp], u % d_mlp
            n_top = int(top["filled"][u].sum())
            rows.append({
                "layer": layer, "neuron": neuron, "pos": labels.tags[t], "held_out": True,
                "auroc": float(rep.auroc[u, t]), "ap": float(rep.ap[u, t]), "cohens_d": float(rep.cohens_d[u, t]),
                "mean_diff": float(rep.mean_diff[u, t]), "mean_pos": float(rep.mean_pos[u, t]),
                "mean_neg": float(rep.mean_neg[u, t]), "p_value": float(rep.p_value[u, t]), "q_value": float(q[u, t]),
                "n_pos": int(rep.n_pos[u, t]), "n_neg": int(rep.n_neg[u, t]), "auroc_err": float(rep.auroc_err[u, t]),
                "auroc_select": float(sel.auroc[u, t]), "best_tag": bool(dec["best"][u] == t),
                "selected": bool(dec["selected"][u, t]), "selective": bool(dec["selective"][u, t]),
                "top_k_precision": float((top["tag"][u] == t).sum() / n_top) if n_top else math.nan,
                "n_word_types_top_k": int(top["n_types"][u]), "top_k_word_share": float(top["share"][u]),
                "ambiguous_auroc": float(rep.ambiguous_auroc[u, t]),
                "n_ambiguous_pos": int(rep.ambiguous_n_pos[u, t]), "n_ambiguous_neg": int(rep.ambiguous_n_neg[u, t]),
                **logits.get((layer, neuron), {}),
            })
        rows.sort(key=lambda r: (not r["selective"], -np.nan_to_num(r["auroc"], nan=-1.0), r["layer"], r["neuron"]))
        return rows

    def _summary(self, rep: TagTests, q: np.ndarray, dec: dict) -> dict:
        cfg, labels, corpus, model = self.cfg, self.labels, self.corpus, self.model
        sel_stats, out_stats = self.stats
        n_valid, selective, discovered = dec["n_valid"], dec["selective"], dec["discovered"]
        return {
            "n_stories": len(corpus), "n_stories_select": len(self.sel_idx), "n_stories_held_out": len(self.out_idx),
            "n_tokens_select": sel_stats.n_tokens, "n_tokens_held_out": out_stats.n_tokens,
            "truncated_stories": int((corpus.lengths() > model.cfg.n_ctx).sum()),
            "layers": self.layers, "d_mlp": model.cfg.d_mlp, "n_neurons": len(self.layers) * model.cfg.d_mlp,
            "tags": labels.tags,
            "tag_support_held_out": dict(zip(labels.tags, out_stats.support.tolist())),
            "tag_word_types": dict(zip(labels.tags, (labels.tag_counts > 0).sum(0).tolist())),  # whole corpus
            "n_tests": n_valid, "auroc_threshold": cfg.auroc_threshold, "fdr": cfg.fdr,
            "n_significant": int((np.nan_to_num(q, nan=1.0) < cfg.fdr).sum()),
            "n_discoveries": int(discovered.sum()), "discovery_rate": float(discovered.sum() / max(n_valid, 1)),
            "n_selected": int(dec["selected"].sum()),
            "selective_per_tag": {tag: int(selective[:, i].sum()) for i, tag in enumerate(labels.tags)},
            "n_selective": int(selective.sum()), "n_selective_neurons": int(selective.any(1).sum()),
            "max_auroc_err": float(np.nanmax(rep.auroc_err)) if n_valid else math.nan,
            "method": (f"AUROC/AP from {cfg.n_bins} per-neuron quantile bins (edges from {cfg.calib_tokens} selection-half "
                       "tokens); one-sided Mann-Whitney (normal approx., tie+continuity corrected); BH over all held-out tests"),
            "config": dataclasses.asdict(cfg),
        }


def _decide(sel: TagTests, rep: TagTests, q: np.ndarray, cfg: NeuronConfig) -> dict:
    """The decision rule: ``selected`` (selection half), ``selective`` (and held out), ``discovered``
    (held out alone), each neuron's ``best`` tag on the selection half, and the rows to ``keep``."""
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
    return {"selected": selected, "selective": selective, "discovered": discovered, "best": best, "keep": keep,
            "n_valid": int(rep.valid.sum())}


def _top_k_controls(top: TopKBuffer, labels: CorpusLabels) -> dict[str, np.ndarray]:
    """Per unit, from the held-out top-k (exact values from the buffer): each entry's tag and whether it is
    filled, the number of distinct word types and the share of the top-k held by its most frequent word type."""
    top_story, top_pos = top.story.cpu().numpy(), top.pos.cpu().numpy()  # [unit, k]
    top_tag = np.full(top_story.shape, -1)
    top_word = np.full(top_story.shape, -1)
    filled = top_story >= 0
    for u, j in zip(*filled.nonzero()):  # units × k lookups, independent of corpus size
        top_tag[u, j] = labels.tag_ids[top_story[u, j]][top_pos[u, j]]
        top_word[u, j] = labels.word_ids[top_story[u, j]][top_pos[u, j]]
    n_types = np.array([len(set(w[w >= 0].tolist())) for w in top_word])
    share = np.array([np.bincount(w[w >= 0]).max() / (w >= 0).sum() if (w >= 0).any() else math.nan
                      for w in top_word])
    return {"tag": top_tag, "filled": filled, "n_types": n_types, "share": share}


def run_neuron_job(model, corpus: TaggedCorpus, cfg: NeuronConfig, label: str = "neurons",
                   labels: CorpusLabels | None = None) -> NeuronResults:
    """Build a :class:`NeuronJob` with ``model`` in eval mode and :meth:`~NeuronJob.run` it."""
    with eval_mode(model):
        return NeuronJob(model, corpus, cfg, label, labels).run()
