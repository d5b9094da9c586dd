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
bootstrap CIs (:func:`~tinyinterp.analysis.stats.bootstrap_mean`); ``p_random`` is the share of
random sets whose target change reaches the chosen set's.

Units are addressed as ``(hook name, index)``: MLP neurons today (:func:`neuron_units`); an SAE
feature would pass its feature-activation hook and decoder norms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from tinyinterp.analysis.stats import bootstrap_mean, story_sums, story_weights
from tinyinterp.analysis.neurons.units import UnitActivations
from tinyinterp.analysis.neurons.metrics import auroc_matrix
from tinyinterp.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["AblationConfig", "ablation_table", "matched_random_sets", "neuron_units"]


@dataclass
class AblationConfig:
    n_units: int = 10
    """Units ablated per tag (top by selection-half AUROC)."""
    n_random: int = 10
    """Matched random sets per tag."""
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
        if self.n_units < 1 or self.n_random < 0 or self.n_neighbours < 1:
            raise ConfigError("AblationConfig: n_units and n_neighbours must be >= 1, n_random >= 0")


def neuron_units(model, ua: UnitActivations) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
    """``(hook, index)`` per neuron unit of ``ua``, its output-weight norm, and its group (layer)."""
    from tinyinterp.analysis.engine import mlp_hook

    layer, neuron = ua.unit_meta["layer"], ua.unit_meta["neuron"]
    refs = [(mlp_hook(int(x)), int(n)) for x, n in zip(layer, neuron)]
    norms = np.array([float(model.blocks[int(x)].mlp.W_out[int(n)].detach().norm()) for x, n in zip(layer, neuron)])
    return refs, norms, np.asarray(layer)


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


@torch.no_grad()
def _token_losses(model, corpus, stories: np.ndarray, sets: list[list[tuple[str, int]]], means: dict[str, torch.Tensor],
                  batch_tokens: int, progress: bool = False, make_hook=None):
    """Per-position next-token loss, clean and under each ablation set; plus the batches' story/row layout."""
    from tinyinterp.analysis.engine import padded_tokens, plan_batches, story_lengths

    lengths = story_lengths(corpus, model.cfg.n_ctx)
    dev = model.cfg.device
    out = []
    for idx in tqdm(plan_batches(lengths, max(batch_tokens, model.cfg.n_ctx), stories), desc="ablation",
                    disable=not progress, leave=False):
        tokens = padded_tokens(corpus, idx, lengths).to(dev)
        valid = (torch.arange(tokens.shape[1] - 1)[None, :] < torch.as_tensor(lengths[idx] - 1)[:, None]).numpy()

        def run(hooks) -> np.ndarray:
            loss = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=hooks)
            return loss.float().cpu().numpy()  # [batch, pos-1]

        clean = run([])
        ablated = []
        for units in sets:
            by_hook: dict[str, list[int]] = {}
            for h, i in units:
                by_hook.setdefault(h, []).append(i)
            hooks = [(h, (make_hook or _mean_hook)(torch.tensor(ix, device=dev), means[h])) for h, ix in by_hook.items()]
            ablated.append(run(hooks))
        out.append((idx, valid, clean, ablated))
    return out


def _mean_hook(idx: torch.Tensor, mean: torch.Tensor):
    def hook(act, hook):
        act[..., idx] = mean[idx].to(act.dtype)
        return act
    return hook


def ablation_table(model, corpus, ua: UnitActivations, units: Sequence[tuple[str, int]], norm: np.ndarray,
                   group: np.ndarray, cfg: AblationConfig | None = None, progress: bool = False,
                   make_hook=None) -> list[dict[str, Any]]:
    """One row per tag: target / off-target loss change of its top units vs matched random sets.

    ``make_hook(idx, means)``: the hook that sets units ``idx`` of a hook point to ``means[idx]``
    (default: overwrite the activations; SAE features splice through the SAE instead)."""
    cfg = cfg or AblationConfig()
    sel = ua.selection
    auc, _, _ = auroc_matrix(ua.acts[sel], ua.tags[sel], ua.n_tags)  # [unit, tag], selection half only
    variance = ua.acts[sel].var(0)
    means: dict[str, torch.Tensor] = {}
    mu = ua.acts[sel].mean(0)
    for (h, i), m in zip(units, mu):
        means.setdefault(h, torch.zeros(int(max(j for hh, j in units if hh == h)) + 1, device=model.cfg.device))[i] = float(m)
    rng = np.random.default_rng(cfg.seed)
    tags = [t for t in ua.tag_names if cfg.tags is None or t in cfg.tags]
    plan = {}
    for t in tags:
        col = np.nan_to_num(auc[:, ua.tag_names.index(t)], nan=0.0)
        chosen = np.argsort(-col, kind="stable")[: cfg.n_units]
        plan[t] = [chosen] + matched_random_sets(chosen, variance, norm, group, cfg.n_random, cfg.n_neighbours, rng)
    held = np.unique(ua.story[~sel])
    held = held[: cfg.max_stories] if cfg.max_stories is not None else held
    flat = [s for t in tags for s in plan[t]]
    batches = _token_losses(model, corpus, held, [[units[u] for u in s] for s in flat], means, cfg.batch_tokens, progress,
                            make_hook)
    return [_tag_row(t, ua, plan[t], flat, batches, corpus, model, auc, cfg) for t in tags]


def _tag_row(tag, ua, sets, flat, batches, corpus, model, auc, cfg) -> dict[str, Any]:
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
    w = story_weights(n_st, cfg.n_boot, cfg.seed)
    d_t, d_o = tgt_sum.sum(0) / max(n_tgt.sum(), 1), off_sum.sum(0) / max(n_off.sum(), 1)
    bt = bootstrap_mean(tgt_sum[:, 0], n_tgt, w)
    bo = bootstrap_mean(off_sum[:, 0], n_off, w)
    ratio_reps = (w @ tgt_sum[:, 0] / (w @ n_tgt)) / (w @ off_sum[:, 0] / (w @ n_off))
    rand_t, rand_ratio = d_t[1:], d_t[1:] / d_o[1:]
    t = ua.tag_names.index(tag)
    return {
        "tag": tag, "units": [ua.unit_names[u] for u in sets[0]],
        "selection_auroc": [float(auc[u, t]) for u in sets[0]], "n_target": int(n_tgt.sum()), "n_stories": n_st,
        "delta_target": float(d_t[0]), "delta_target_ci": [float(bt.ci_low), float(bt.ci_high)],
        "delta_off_target": float(d_o[0]), "delta_off_target_ci": [float(bo.ci_low), float(bo.ci_high)],
        "ratio": float(d_t[0] / d_o[0]), "ratio_ci": [float(x) for x in np.nanquantile(ratio_reps, [0.025, 0.975])],
        "random_delta_target": rand_t.tolist(), "random_ratio": rand_ratio.tolist(),
        "random_delta_target_mean": float(rand_t.mean()) if len(rand_t) else float("nan"),
        "p_random": float((1 + (rand_t >= d_t[0]).sum()) / (1 + len(rand_t))),
        "p_random_ratio": float((1 + (rand_ratio >= d_t[0] / d_o[0]).sum()) / (1 + len(rand_ratio))),
    }
