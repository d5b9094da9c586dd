"""Ablation that means something: chosen on the selection half, ablated on the held-out half.

For every tag, :func:`ablation_table` takes the ``n_units`` units with the highest
selection-half AUROC for that tag (every unit is ranked for every tag, so each tag's set is
complete, not only units whose best tag it is), mean-ablates them (means from the selection
half) on held-out stories, and measures the change of next-token loss

* on **target** positions: the last token of each word with the tag (predicting what follows);
* on **off-target** positions: every other position;

with their ratio (specificity of the effect). The same is done for ``n_random`` random sets
matched unit by unit on activation variance and output-weight norm within the same group
(layer), so "bigger than random" does not just mean "louder units". Loss changes get story-
bootstrap CIs (:func:`~tinyinterp.analysis.stats.bootstrap_mean`). The test, per tag: does the
chosen set raise target loss more than matched random sets do? ``p_random = (1 + #{random sets
whose target change >= the chosen set's}) / (1 + n_random)`` (a permutation p-value, valid at any
``n_random``); ``q_random`` its Benjamini-Hochberg q-value across all tags of the table (one table:
the neurons; an SAE's features are another), ``significant``: ``q_random <= alpha``. The default
``n_random`` grows with the number of tags so that a corrected test can pass at all
(:meth:`AblationConfig.random_sets`). ``p_random_ratio`` / ``q_random_ratio`` do the same for the
target/off-target ratio. :func:`neuron_ablation` does the same for a set of neurons you choose
(e.g. one neuron in the explorer). The loss under many sets comes from one clean pass per batch
(:mod:`~tinyinterp.analysis.neurons.ablation_losses`), equal to one forward pass per set.

What is ranked and matched on comes as :class:`SelectionStats` (selection half only): from the
neuron analysis (``NeuronResults.selection``), from in-memory activations
(:meth:`SelectionStats.from_units`) or from one pass over the selection half
(:func:`selection_stats`). :class:`AblationResults` is what ``ablation.json`` holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from tinyinterp.analysis.neurons.ablation_losses import LowRank, set_losses
from tinyinterp.analysis.results_io import JsonResult
from tinyinterp.analysis.stats import bh_qvalues, bootstrap_mean, min_resamples, story_weights
from tinyinterp.analysis.neurons.units import UnitActivations
from tinyinterp.analysis.neurons.metrics import auroc_matrix
from tinyinterp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["ABLATION_JSON", "AblationConfig", "AblationResults", "AblationUnits", "SelectionStats", "ablation_table", "matched_random_sets",
           "neuron_ablation", "selection_stats"]

ABLATION_JSON = "ablation.json"


@dataclass
class AblationConfig:
    n_units: int = 10
    """Units ablated per tag (top by selection-half AUROC)."""
    n_random: int | None = None
    """Matched random sets per tag. None: ``2 * ceil(m / alpha)`` for a table of ``m`` tags (40 for one tag,
    120 for NOUN/VERB/ADJ, 200 for 5): the smallest p-value ``1 / (n_random + 1)`` times ``m`` (its BH q-value
    when it is the only small one) is then below ``alpha / 2``, so a tag whose chosen set beats every random set
    passes the correction, and so does one that a single random set reaches (q < ``alpha``). With fewer than
    ``ceil(m / alpha)`` sets no tag can pass (a warning says so)."""
    alpha: float = 0.05
    """False discovery rate of the Benjamini-Hochberg correction across the table's tags (``significant``)."""
    method: str = "auto"
    """``auto``: losses from one cached clean pass per batch (low-rank update of the MLP output; exact, see
    :mod:`~tinyinterp.analysis.neurons.ablation_losses`); ``forward``: one full forward pass per set (the reference)."""
    n_neighbours: int = 10
    """A random stand-in for a unit is drawn from its ``n_neighbours`` nearest units in (log variance, log norm)."""
    max_stories: int | None = 200
    """Held-out stories ablated on (None: all)."""
    tags: tuple[str, ...] | None = None
    """Tags to ablate (None: every tag)."""
    n_boot: int = 1000
    batch_tokens: int = 8192
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_units < 1 or self.n_neighbours < 1:
            raise ConfigError("AblationConfig: n_units and n_neighbours must be >= 1")
        if self.n_random is not None and self.n_random < 0:
            raise ConfigError(f"AblationConfig.n_random={self.n_random}: must be >= 0 (or None: derived from the tags)")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"AblationConfig.alpha={self.alpha}: must be in (0, 1)")
        if self.method not in ("auto", "forward"):
            raise ConfigError(f"AblationConfig.method={self.method!r}: use 'auto' or 'forward'")

    def random_sets(self, n_tags: int) -> int:
        """Random sets per tag for a table of ``n_tags`` tags (``n_random``, or the derived default)."""
        if self.n_random is not None:
            if self.n_random < min_resamples(n_tags, self.alpha):
                log.warning("ablation: %d random sets per tag cannot pass BH at alpha=%g over %d tags (needs >= %d)",
                            self.n_random, self.alpha, n_tags, min_resamples(n_tags, self.alpha))
            return self.n_random
        return 2 * min_resamples(max(n_tags, 1), self.alpha)


@dataclass
class SelectionStats:
    """Per MLP neuron, on the selection half's analysed tokens: mean and variance (and AUROC per tag, to
    rank); plus which stories are held out (where the ablation runs)."""

    layer: np.ndarray  # int [unit]
    neuron: np.ndarray  # int [unit]
    mean: np.ndarray  # [unit]: the mean-ablation value
    variance: np.ndarray  # [unit]: matched on
    held_out: np.ndarray  # story indices of the held-out half
    tag_names: list[str] = field(default_factory=list)
    auroc: np.ndarray | None = None  # [unit, tag], selection half; None: nothing to rank by
    names: list[str] | None = None  # unit names when the units are not MLP neurons (e.g. SAE features)

    @property
    def unit_names(self) -> list[str]:
        if self.names is not None:
            return list(self.names)
        return [f"L{int(x)}.N{int(n)}" for x, n in zip(self.layer, self.neuron)]

    def index(self, layer: int, neuron: int) -> int:
        hit = np.flatnonzero((self.layer == layer) & (self.neuron == neuron))
        if not hit.size:
            raise ConfigError(f"neuron ({layer}, {neuron}) is not among the analysed neurons")
        return int(hit[0])

    @classmethod
    def from_units(cls, ua: UnitActivations) -> "SelectionStats":
        """From in-memory MLP-neuron activations (``unit_meta`` has ``layer`` and ``neuron``)."""
        sel = ua.selection
        auc, _, _ = auroc_matrix(ua.acts[sel], ua.tags[sel], ua.n_tags)
        return cls(layer=np.asarray(ua.unit_meta["layer"]), neuron=np.asarray(ua.unit_meta["neuron"]),
                   mean=ua.acts[sel].mean(0), variance=ua.acts[sel].var(0), held_out=np.unique(ua.story[~sel]),
                   tag_names=list(ua.tag_names), auroc=auc)


@torch.no_grad()
def selection_stats(model, corpus, split_seed: int = 0, layers: Sequence[int] | None = None,
                    batch_tokens: int = 8192) -> SelectionStats:
    """Mean and variance of every MLP neuron over the selection half's analysed tokens (one pass)."""
    from tinyinterp.analysis.corpus.labels import label_corpus
    from tinyinterp.analysis.engine import mlp_hook, stream_activations

    layers = list(range(model.cfg.n_layers)) if layers is None else [int(x) for x in layers]
    labels, hooks = label_corpus(corpus), [mlp_hook(x) for x in layers]
    sel, held = corpus.split_indices(split_seed)
    s = ss = None
    n = 0
    for bt in stream_activations(model, corpus, hooks, batch_tokens, indices=sel, desc="ablation: selection half"):
        b, p, _, _ = labels.analysed(bt.stories, bt.mask)
        dev = bt.acts[hooks[0]].device
        x = torch.cat([bt.acts[h][b.to(dev), p.to(dev)] for h in hooks], 1).double()  # [tok, unit]
        s = x.sum(0) if s is None else s + x.sum(0)
        ss = x.square().sum(0) if ss is None else ss + x.square().sum(0)
        n += x.shape[0]
    if not n:
        raise DataError("the selection half has no analysed tokens; use more stories")
    mean = (s / n).cpu().numpy()
    d_mlp = model.cfg.d_mlp
    return SelectionStats(layer=np.repeat(layers, d_mlp), neuron=np.tile(np.arange(d_mlp), len(layers)), mean=mean,
                          variance=np.maximum((ss / n).cpu().numpy() - mean ** 2, 0.0), held_out=np.asarray(held),
                          tag_names=list(labels.tags))


@dataclass
class AblationUnits:
    """Where each unit of :class:`SelectionStats` lives and how to ablate it (default: MLP neurons,
    overwritten with their mean; SAE features pass their own, spliced through the SAE)."""

    refs: list[tuple[str, int]]  # (hook name, index at that hook) per unit
    norm: np.ndarray  # [unit]: output-weight (or decoder) norm, matched on
    make_hook: Callable[[torch.Tensor, torch.Tensor], Callable] | None = None  # (idx, means) -> hook; None: overwrite
    matched_on: str = "activation variance (selection half) and output-weight norm, same layer"
    low_rank: LowRank | None = None  # the same ablation as an update of the MLP output (None with make_hook: full forwards)


def _refs(model, stats: SelectionStats) -> AblationUnits:
    """``(hook, index)`` per neuron and its output-weight norm ``|W_out[n]|``."""
    from tinyinterp.analysis.engine import mlp_hook

    refs = [(mlp_hook(int(x)), int(n)) for x, n in zip(stats.layer, stats.neuron)]
    norms = np.array([float(model.blocks[int(x)].mlp.W_out[int(n)].detach().norm()) for x, n in zip(stats.layer, stats.neuron)])
    return AblationUnits(refs, norms)


def matched_random_sets(chosen: np.ndarray, variance: np.ndarray, norm: np.ndarray, group: np.ndarray,
                        n_sets: int, n_neighbours: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random unit sets matched one to one to ``chosen`` on (log variance, log norm) within ``group``."""
    feats = np.stack([np.log(variance + 1e-12), np.log(norm + 1e-12)], 1)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-12)
    pools = []
    for u in chosen:
        cand = np.flatnonzero((group == group[u]) & ~np.isin(np.arange(len(group)), chosen))
        if len(cand) == 0:
            raise ConfigError(f"no other unit in group {group[u]} to match unit {u} with")
        d = np.linalg.norm(feats[cand] - feats[u], axis=1)
        pools.append(cand[np.argsort(d, kind="stable")[:n_neighbours]])
    sets = []
    for _ in range(n_sets):
        s: list[int] = []
        for pool in pools:  # without replacement inside a set
            free = pool[~np.isin(pool, s)]
            s.append(int(rng.choice(free if len(free) else pool)))
        sets.append(np.array(s))
    return sets


def _targets(corpus, stories: np.ndarray, n_pos: int, lengths: np.ndarray, tag: str) -> np.ndarray:
    """bool [batch, n_pos-1]: position p holds the last token of a ``tag`` word (its loss predicts p+1)."""
    out = np.zeros((len(stories), n_pos - 1), dtype=bool)
    for row, i in enumerate(stories):
        s, n = corpus.stories[int(i)], int(lengths[i])
        out[row, : n - 1] = (np.asarray(s.upos[: n - 1]) == tag) & ~np.asarray(s.continuation[1:n], dtype=bool)
    return out


def _ablate(model, corpus, stats: SelectionStats, plan: dict[str, list[np.ndarray]], cfg: AblationConfig,
            progress: bool, units: AblationUnits) -> list[dict[str, Any]]:
    """Run every set of ``plan`` (tag -> [chosen, random...]) on the held-out stories; one row per tag."""
    refs = units.refs
    size: dict[str, int] = {}
    for h, i in refs:
        size[h] = max(size.get(h, 0), i + 1)
    means: dict[str, torch.Tensor] = {}
    for (h, i), m in zip(refs, stats.mean):
        means.setdefault(h, torch.zeros(size[h], device=model.cfg.device))[i] = float(m)
    held = np.asarray(stats.held_out)
    held = held[: cfg.max_stories] if cfg.max_stories is not None else held
    tags = list(plan)
    flat = [s for t in tags for s in plan[t]]
    batches = set_losses(model, corpus, held, [[refs[u] for u in s] for s in flat], means, cfg.batch_tokens, progress,
                         units.make_hook, units.low_rank, cfg.method)
    rows = [{**_tag_row(t, stats, plan[t], flat, batches, corpus, model, cfg), "matched_on": units.matched_on} for t in tags]
    return correct_rows(rows, cfg.alpha)


def correct_rows(rows: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """Benjamini-Hochberg across the rows (tags) of one table: ``q_random``, ``q_random_ratio``, ``significant``."""
    q = bh_qvalues(np.array([r["p_random"] for r in rows], dtype=float))
    q_ratio = bh_qvalues(np.array([r["p_random_ratio"] for r in rows], dtype=float))
    for r, a, b in zip(rows, q, q_ratio):
        r.update({"q_random": float(a), "q_random_ratio": float(b), "significant": bool(a <= alpha), "alpha": alpha,
                  "correction": f"Benjamini-Hochberg over the {len(rows)} tag(s) of this table"})
    return rows


def ablation_table(model, corpus, stats: SelectionStats, cfg: AblationConfig | None = None,
                   progress: bool = False, units: AblationUnits | None = None) -> list[dict[str, Any]]:
    """One row per tag: target / off-target loss change of its top units (selection-half AUROC) vs matched random sets.

    ``units``: where the units live and how to ablate them (default: ``stats``' MLP neurons, mean-overwritten)."""
    cfg = cfg or AblationConfig()
    if stats.auroc is None:
        raise ConfigError("ablation_table needs SelectionStats with a selection-half AUROC to rank by")
    units = units or _refs(model, stats)
    norm = units.norm
    rng = np.random.default_rng(cfg.seed)
    plan = {}
    tags = [t for t in stats.tag_names if cfg.tags is None or t in cfg.tags]
    n_random = cfg.random_sets(len(tags))
    for t in tags:
        col = np.nan_to_num(stats.auroc[:, stats.tag_names.index(t)], nan=0.0)
        chosen = np.argsort(-col, kind="stable")[: cfg.n_units]
        plan[t] = [chosen] + matched_random_sets(chosen, stats.variance, norm, stats.layer, n_random, cfg.n_neighbours, rng)
    return _ablate(model, corpus, stats, plan, cfg, progress, units)


def neuron_ablation(model, corpus, neurons: Sequence[tuple[int, int]], tag: str, cfg: AblationConfig | None = None,
                    stats: SelectionStats | None = None, progress: bool = False) -> dict[str, Any]:
    """Mean-ablate chosen ``(layer, neuron)`` on the held-out half against matched random sets; one row as in
    :func:`ablation_table`. ``stats``: from the neuron analysis if you have them, else one selection-half pass."""
    cfg = cfg or AblationConfig()
    stats = stats if stats is not None else selection_stats(model, corpus)
    if tag not in stats.tag_names:
        raise DataError(f"tag {tag!r} does not occur in the corpus ({', '.join(stats.tag_names)})")
    chosen = np.array([stats.index(int(x), int(n)) for x, n in neurons])
    units = _refs(model, stats)
    rng = np.random.default_rng(cfg.seed)
    sets = [chosen] + matched_random_sets(chosen, stats.variance, units.norm, stats.layer, cfg.random_sets(1),
                                          cfg.n_neighbours, rng)
    return _ablate(model, corpus, stats, {tag: sets}, cfg, progress, units)[0]


def _tag_row(tag, stats: SelectionStats, sets, flat, batches, corpus, model, cfg) -> dict[str, Any]:
    from tinyinterp.analysis.engine import story_lengths

    lengths = story_lengths(corpus, model.cfg.n_ctx)
    first = next(i for i, s in enumerate(flat) if s is sets[0])
    n_st = sum(len(b[0]) for b in batches)
    tgt_sum = np.zeros((n_st, len(sets)))
    off_sum = np.zeros((n_st, len(sets)))
    n_tgt, n_off = np.zeros(n_st), np.zeros(n_st)
    r0 = 0
    for idx, valid, clean, ablated in batches:
        tgt = _targets(corpus, idx, clean.shape[1] + 1, lengths, tag) & valid
        off = valid & ~tgt
        for j in range(len(sets)):
            d = ablated[first + j] - clean
            tgt_sum[r0:r0 + len(idx), j] = (d * tgt).sum(1)
            off_sum[r0:r0 + len(idx), j] = (d * off).sum(1)
        n_tgt[r0:r0 + len(idx)], n_off[r0:r0 + len(idx)] = tgt.sum(1), off.sum(1)
        r0 += len(idx)
    if not n_tgt.sum():
        raise DataError(f"no '{tag}' word followed by another token in the held-out stories; pick another tag or more stories")
    w = story_weights(n_st, cfg.n_boot, cfg.seed)
    d_t, d_o = tgt_sum.sum(0) / max(n_tgt.sum(), 1), off_sum.sum(0) / max(n_off.sum(), 1)
    bt = bootstrap_mean(tgt_sum[:, 0], n_tgt, w)
    bo = bootstrap_mean(off_sum[:, 0], n_off, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_reps = (w @ tgt_sum[:, 0] / (w @ n_tgt)) / (w @ off_sum[:, 0] / (w @ n_off))
        rand_t, rand_o, rand_ratio = d_t[1:], d_o[1:], d_t[1:] / d_o[1:]
        ratio = d_t[0] / d_o[0]
    t = stats.tag_names.index(tag)
    nan = float("nan")
    return {
        "tag": tag, "units": [stats.unit_names[u] for u in sets[0]],
        "neurons": [[int(stats.layer[u]), int(stats.neuron[u])] for u in sets[0]],
        "selection_auroc": [float(stats.auroc[u, t]) if stats.auroc is not None else nan for u in sets[0]],
        "n_target": int(n_tgt.sum()), "n_off_target": int(n_off.sum()), "n_stories": n_st,
        "delta_target": float(d_t[0]), "delta_target_ci": [float(bt.ci_low), float(bt.ci_high)],
        "delta_off_target": float(d_o[0]), "delta_off_target_ci": [float(bo.ci_low), float(bo.ci_high)],
        "ratio": float(ratio), "ratio_ci": [float(x) for x in np.nanquantile(ratio_reps, [0.025, 0.975])],
        "random_delta_target": rand_t.tolist(), "random_delta_off_target": rand_o.tolist(), "random_ratio": rand_ratio.tolist(),
        "n_random": len(rand_t), "random_delta_target_mean": float(rand_t.mean()) if len(rand_t) else nan,
        "random_ratio_mean": float(np.nanmean(rand_ratio)) if len(rand_ratio) else nan,
        "p_random": float((1 + (rand_t >= d_t[0]).sum()) / (1 + len(rand_t))),
        "p_random_ratio": float((1 + (rand_ratio >= ratio).sum()) / (1 + len(rand_ratio))),
    }


@dataclass
class AblationResults(JsonResult):
    """The rows of :func:`ablation_table` (one per tag); ``save(folder)`` writes ``ablation.json`` (a list)."""

    FILE: ClassVar[str] = ABLATION_JSON
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def to_json_obj(self) -> list[dict[str, Any]]:
        return self.rows

    @classmethod
    def from_json_obj(cls, data: Any) -> "AblationResults":
        if not isinstance(data, list):
            raise TypeError("ablation.json must hold a list of rows")
        return cls([dict(d) for d in data])
