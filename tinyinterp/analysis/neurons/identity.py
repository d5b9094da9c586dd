"""Which units are selective for a part of speech beyond token identity?

In TinyStories the part of speech is almost a function of the token (a model-free lookup
reaches held-out AUROC ~0.996 for NOUN), so a high AUROC alone says nothing about a unit
encoding the tag. :func:`classify_units` gives every *candidate* unit x tag row (selected on
the selection half) one ``category``:

``pos``
    selective beyond identity. On the held-out half: AUROC >= ``auroc_threshold``; AUROC on
    tokens of the other token-id fold (ids never seen when selecting) >= ``unseen_auroc_threshold``
    in every fold that selected it; the **within-identity** AUROC on ambiguous words (word types that
    carry this tag and another in the selection half: "play", "walk", "one" ...) has a story-
    bootstrap CI above 0.5 and BH q < ``fdr``, comparing only tokens with the same token id and word
    (a lookup scores exactly 0.5 there); and at least
    ``min_top_types`` word types with the tag among the unit's top-``top_k`` activations.
``token``
    replicated, but an identity test with enough support failed: its effect is carried by one
    or a few word types (few types at the top, no generalisation to unseen types, or no
    within-type signal on ambiguous words).
``untestable``
    replicated, no test failed, but a deciding test lacked support (too few ambiguous tokens,
    stories or unseen types).
``None``
    selected but not replicated on the held-out half.

Sensitivity (AUROC) and specificity (precision of the top activations, AP and AP lift over the
base rate) are reported side by side. :func:`paper_specificity` tests the paper's claim form,
"a neuron that only activates on adjectives": the tag dominating a unit's top activations on the
selection half holds >= ``paper_precision`` of its held-out top activations across
>= ``paper_min_types`` word types. Thresholds and where they come from: docs/analysis.md.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyinterp.analysis.stats import (bh_qvalues, bootstrap_auroc, cluster_bootstrap_auroc, story_pair_bootstrap_auroc,
                                       story_weights, weighted_auroc)
from tinyinterp.analysis.neurons.units import UnitActivations
from tinyinterp.analysis.neurons.metrics import UnitColumns, auroc_matrix, average_precision, specificity, top_tokens
from tinyinterp.analysis.neurons.ranks import block_rows, sweep_half
from tinyinterp.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["CATEGORIES", "IdentityConfig", "IdentityResults", "classify_units", "paper_specificity"]

CATEGORIES = ("pos", "token", "untestable")


@dataclass
class IdentityConfig:
    auroc_threshold: float = 0.9
    """AUROC a row needs on the selection half (per type fold) to be a candidate, and held out to replicate."""
    unseen_auroc_threshold: float = 0.8
    """Held-out AUROC on tokens of the other token-id fold (unseen when selecting) needed for ``pos``."""
    min_support: int = 20
    """Positives and negatives an AUROC needs (each half, each fold); else NaN."""
    unseen_min_types: int = 3
    """Distinct unseen token ids with the tag the unseen test needs (else untestable)."""
    ambiguous_min_count: int = 2
    """A word type is ambiguous for a tag when it carries it and another tag this often (selection half)."""
    ambiguous_min_support: int = 20
    """Held-out positives and negatives (inside ambiguous types having both) the ambiguous test needs."""
    ambiguous_min_stories: int = 10
    """Held-out stories holding ambiguous positives the ambiguous test needs (it resamples stories)."""
    top_k: int = 50
    """Top activations per unit (held out) for precision and the word-type count."""
    min_top_types: int = 5
    """Word types with the tag among the top-k a ``pos`` row needs ("one or a few" types: ``token``)."""
    paper_precision: float = 0.9
    """Paper-form specificity: share of one tag among the held-out top-k."""
    paper_min_types: int = 10
    """Paper-form specificity: word types with that tag among the held-out top-k."""
    n_boot: int = 1000
    """Story-bootstrap resamples for CIs and Wald p-values."""
    n_boot_types: int = 200
    """Token-id-bootstrap resamples for unseen-id CIs (cost ~ n_boot_types x held-out tokens per test)."""
    fdr: float = 0.05
    """Benjamini–Hochberg level over every ambiguous-word test run."""
    type_seed: int = 0
    """Seed of the token-id folds."""
    boot_seed: int = 0
    """Seed of the story bootstrap."""

    def __post_init__(self) -> None:
        for name in ("auroc_threshold", "unseen_auroc_threshold", "paper_precision"):
            if not 0.5 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"IdentityConfig.{name}={getattr(self, name)}: must be in [0.5, 1]")
        if not 0 < self.fdr < 1:
            raise ConfigError(f"IdentityConfig.fdr={self.fdr}: must be in (0, 1)")
        for name in ("min_support", "unseen_min_types", "ambiguous_min_count", "ambiguous_min_support",
                     "ambiguous_min_stories", "top_k", "min_top_types", "paper_min_types", "n_boot", "n_boot_types"):
            if getattr(self, name) < 1:
                raise ConfigError(f"IdentityConfig.{name}={getattr(self, name)}: must be >= 1")


@dataclass
class IdentityResults:
    rows: list[dict[str, Any]]  # one per candidate unit x tag
    summary: dict[str, Any]
    paper: list[dict[str, Any]] = field(default_factory=list)  # paper-form specificity, one per unit
    timings: dict[str, float] = field(default_factory=dict)  # bootstrap_s: the story/token-id resampling alone
    selection_auroc: Any = None  # [unit, tag] exact AUROC on the whole selection half (what the ablation ranks by)
    selection_moments: Any = None  # (mean [unit], variance [unit]) on the selection half (what the ablation matches on)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{tag: {category: n}}`` over the rows (``none``: selected but not replicated)."""
        return self.summary["categories_per_tag"]


def _unseen(ua: UnitActivations, X: np.ndarray, out: np.ndarray, fold: np.ndarray, cfg: IdentityConfig,
            units: np.ndarray | None = None):
    """Per fold f: AUROC [unit, tag] on held-out tokens of the other fold's ids (NaN without support;
    ``units``: only these, the others NaN)."""
    res = []
    for f in (0, 1):
        m = fold[out] == 1 - f
        a, n_pos, _ = auroc_matrix(X, ua.tags[out][m], ua.n_tags, cfg.min_support, rows=m, units=units)
        rows = np.flatnonzero(out)[m]
        n_types = np.array([np.unique(ua.token_ids[rows][ua.tags[rows] == t]).size for t in range(ua.n_tags)])  # [tag]
        a[:, n_types < cfg.unseen_min_types] = np.nan
        res.append({"auroc": a, "mask": m, "n_pos": n_pos, "n_types": n_types})
    return res


class _Clock:
    """Seconds spent inside ``with clock:`` blocks, summed (the resampling, reported apart from the rest)."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._t = time.perf_counter()

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._t


def _category(replicated: bool, unseen_fail: bool, unseen_missing: bool, amb: dict[str, Any], top_types: int,
              cfg: IdentityConfig) -> tuple[str | None, list[str]]:
    if not replicated:
        return None, ["not replicated on the held-out half (AUROC below threshold or story-level q >= fdr)"]
    fails, missing = [], []
    if unseen_fail:
        fails.append("unseen token ids")
    elif unseen_missing:
        missing.append("unseen token ids")
    if not amb["supported"]:
        missing.append("ambiguous words")
    elif not amb["passed"]:
        fails.append("ambiguous words")
    if top_types < cfg.min_top_types:
        fails.append("word types among top activations")
    return ("token" if fails else "untestable" if missing else "pos"), fails + [f"no support: {m}" for m in missing]


def classify_units(ua: UnitActivations, cfg: IdentityConfig | None = None) -> IdentityResults:
    """Candidate unit x tag rows with their category, sensitivity, specificity and identity tests."""
    cfg = cfg or IdentityConfig()
    thr, T = cfg.auroc_threshold, ua.n_tags
    sel, out = ua.selection, ~ua.selection
    fold = ua.id_fold(cfg.type_seed)
    # one read of the selection half: [fold, unit, tag] AUROC on each token-id fold and [unit, tag] on the whole
    # half, top-k rows, mean and variance
    sweep = sweep_half(ua.acts, block_rows(sel), ua.tags[sel], fold[sel], 2, T, cfg.min_support, top_k=cfg.top_k)
    sel_auc, sel_auc_all = sweep.fold_auroc, sweep.auroc
    selected = np.nan_to_num(sel_auc, nan=0.0) >= thr
    cand_units = np.flatnonzero(selected.any((0, 2)))  # only these units' held-out AUROCs are ever read
    X = ua.acts[block_rows(out)]  # [held-out token, unit]: a view when the held-out tokens come last (the neuron job)
    tags_o, words_o = ua.tags[out], ua.words[out]
    out_auc, n_pos, n_neg = auroc_matrix(X, tags_o, T, cfg.min_support, units=cand_units)
    unseen = _unseen(ua, X, out, fold, cfg, cand_units)
    amb_sets = ua.ambiguous_sets(cfg.ambiguous_min_count)
    top = top_tokens(X, cfg.top_k)
    spec = specificity(top, tags_o, words_o, T)
    _, story_o = np.unique(ua.story[out], return_inverse=True)
    clock = _Clock()
    with clock:
        weights = story_weights(int(story_o.max()) + 1, cfg.n_boot, cfg.boot_seed)
    cand = list(zip(*np.nonzero(selected.any(0))))
    log.info("identity: %d candidate unit x tag rows of %d units x %d tags", len(cand), ua.n_units, T)
    cols = UnitColumns(X, cand_units)  # the candidates' held-out columns, contiguous: what every per-row test reads
    ap = average_precision(cols, tags_o, cand)

    with clock:
        rep_ci = _replication(cols, tags_o, cand, out_auc, story_o, weights, cfg)
    rows = []
    for u, t in cand:
        s = amb_sets[t]
        ci_lo, ci_hi, p_rep, q_rep = rep_ci[(u, t)]
        replicated = bool(np.nan_to_num(out_auc[u, t], nan=0.0) >= thr and q_rep < cfg.fdr)
        folds = [f for f in (0, 1) if selected[f, u, t]]
        uv = [unseen[f]["auroc"][u, t] for f in folds]
        unseen_fail = any(np.isfinite(v) and v < cfg.unseen_auroc_threshold for v in uv)
        unseen_missing = any(not np.isfinite(v) for v in uv)
        supported = (s["n_pos"] >= cfg.ambiguous_min_support and s["n_neg"] >= cfg.ambiguous_min_support
                     and s["n_stories"] >= cfg.ambiguous_min_stories)
        amb_est = float(weighted_auroc(cols[u][s["rows"]], s["y"], strata=s["strata"])) if s["n_pos"] and s["n_neg"] else math.nan
        a_ap, base = ap[(u, t)]
        worst = folds[int(np.nanargmin(uv))] if np.isfinite(uv).any() else folds[0]
        rows.append({
            "unit": int(u), "name": ua.unit_names[u], "tag": ua.tag_names[t],
            **{k: int(v[u]) for k, v in ua.unit_meta.items()},
            "auroc_select": [float(sel_auc[f, u, t]) for f in (0, 1)], "selected_folds": folds,
            "auroc": float(out_auc[u, t]), "auroc_ci": [ci_lo, ci_hi], "p_value": p_rep, "q_value": q_rep,
            "n_pos": int(n_pos[t]), "n_neg": int(n_neg[t]), "replicated": replicated,
            "ap": a_ap, "base_rate": base, "ap_lift": a_ap / base if base > 0 else math.nan,
            "top_k_precision": float(spec["precision"][u, t]), "n_top_types": int(spec["n_types"][u, t]),
            "unseen_auroc": float(unseen[worst]["auroc"][u, t]), "unseen_fold": worst,
            "unseen_n_pos": int(unseen[worst]["n_pos"][t]), "unseen_n_types": int(unseen[worst]["n_types"][t]),
            "ambiguous_auroc": amb_est, "ambiguous_n_pos": s["n_pos"], "ambiguous_n_neg": s["n_neg"],
            "ambiguous_n_types": s["n_types"], "ambiguous_n_stories": s["n_stories"], "ambiguous_supported": supported,
            "_unseen_fail": unseen_fail, "_unseen_missing": unseen_missing,
        })
    with clock:
        _ambiguous_inference(rows, cols, amb_sets, story_o, weights, ua, cfg)
    for r in rows:
        amb = {"supported": r["ambiguous_supported"], "passed": r.get("ambiguous_passed", False)}
        r["category"], r["reasons"] = _category(r["replicated"], r.pop("_unseen_fail"), r.pop("_unseen_missing"), amb,
                                                r["n_top_types"], cfg)
    with clock:
        _pos_intervals(rows, cols, unseen, ua, cfg)
    rows.sort(key=lambda r: (CATEGORIES.index(r["category"]) if r["category"] in CATEGORIES else 9, r["tag"], -r["auroc"]))
    paper = paper_specificity(ua, top, spec, cfg, top_select=sweep.top)
    with clock:
        _paper_identity(paper, cols, amb_sets, story_o, weights, ua, cfg)
    return IdentityResults(rows=rows, summary=_summary(ua, rows, paper, cfg), paper=paper,
                           timings={"bootstrap_s": clock.seconds}, selection_auroc=sel_auc_all,
                           selection_moments=(sweep.mean, sweep.var))


def _replication(cols: UnitColumns, tags_o, cand, out_auc, story_o, weights, cfg: IdentityConfig) -> dict:
    """Per candidate: story-bootstrap CI and Wald p (vs 0.5) of its held-out AUROC, and the BH q-value over
    every candidate (the stories, not the tokens, are the independent units)."""
    out, ps = {}, []
    for u, t in cand:
        if not np.isfinite(out_auc[u, t]):
            out[(u, t)] = [math.nan, math.nan, math.nan]
        else:
            b = story_pair_bootstrap_auroc(cols[u], tags_o == t, story_o, weights)
            out[(u, t)] = [float(b.ci_low), float(b.ci_high), float(b.p_value)]
        ps.append(out[(u, t)][2])
    for key, q in zip(cand, bh_qvalues(np.array(ps, dtype=np.float64))):
        out[key].append(float(q) if np.isfinite(q) else math.nan)
    return out


def _ambiguous_inference(rows, cols: UnitColumns, amb_sets, story_o, weights, ua: UnitActivations,
                         cfg: IdentityConfig) -> None:
    """Story-bootstrap CI and Wald p for the within-type ambiguous AUROC of every replicated, supported row; BH over them."""
    tested = [r for r in rows if r["replicated"] and r["ambiguous_supported"]]
    tag_idx = {n: i for i, n in enumerate(ua.tag_names)}
    for r in tested:
        s = amb_sets[tag_idx[r["tag"]]]
        b = bootstrap_auroc(cols[r["unit"]][s["rows"]], s["y"], story_o[s["rows"]], weights, strata=s["strata"])
        r.update(ambiguous_ci_low=float(b.ci_low), ambiguous_ci_high=float(b.ci_high), ambiguous_p=float(b.p_value))
    q = bh_qvalues(np.array([r["ambiguous_p"] for r in tested]))
    for r, qq in zip(tested, q):
        r["ambiguous_q"] = float(qq)
        r["ambiguous_passed"] = bool(r["ambiguous_auroc"] > 0.5 and r["ambiguous_ci_low"] > 0.5 and qq < cfg.fdr)


def _pos_intervals(rows, cols: UnitColumns, unseen, ua: UnitActivations, cfg: IdentityConfig) -> None:
    """CI for the unseen-type claim of ``pos`` rows (token-id bootstrap: generalising to new tokens is a
    claim about tokens, so ids are resampled). A ``pos`` row whose unseen-type CI reaches 0.5 becomes ``token``."""
    tag_idx = {n: i for i, n in enumerate(ua.tag_names)}
    ids_o = ua.token_ids[~ua.selection]
    for r in rows:
        if r["category"] != "pos":
            continue
        y = ua.tags[~ua.selection] == tag_idx[r["tag"]]
        m = unseen[r["unseen_fold"]]["mask"]
        bu = cluster_bootstrap_auroc(cols[r["unit"]][m], y[m], ids_o[m], cfg.n_boot_types, cfg.boot_seed)
        r["unseen_ci"] = [float(bu.ci_low), float(bu.ci_high)]
        if not bu.ci_low > 0.5:
            r["category"], r["reasons"] = "token", ["unseen token ids (token-id bootstrap CI reaches 0.5)"]


def paper_specificity(ua: UnitActivations, top_out: np.ndarray, spec_out: dict[str, np.ndarray],
                      cfg: IdentityConfig, top_select: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per unit: dominant tag of its top-k on the selection half, and its share and word types held out.
    ``top_select``: the selection half's top-k rows when already known (:func:`top_tokens` over its rows)."""
    sel = ua.selection
    if top_select is None:
        top_select = top_tokens(ua.acts, cfg.top_k, rows=block_rows(sel))
    spec_sel = specificity(top_select, ua.tags[sel], ua.words[sel], ua.n_tags)
    out = []
    for u in range(ua.n_units):
        t = int(spec_sel["dominant"][u])
        share, types = float(spec_out["precision"][u, t]), int(spec_out["n_types"][u, t])
        out.append({"unit": u, "name": ua.unit_names[u], "tag": ua.tag_names[t],
                    "share_select": float(spec_sel["dominant_share"][u]), "share": share, "n_types": types,
                    "passes": bool(share >= cfg.paper_precision and types >= cfg.paper_min_types)})
    return out


def _paper_identity(paper, cols: UnitColumns, amb_sets, story_o, weights, ua: UnitActivations,
                    cfg: IdentityConfig) -> None:
    """For units passing the paper form: the within-identity ambiguous test on their tag (BH over them).

    "Only fires on nouns" is a specificity claim; whether the unit tells "play" the noun from
    "play" the verb is what says it reads the part of speech rather than a list of words."""
    tested = []
    for p in paper:
        s = amb_sets[ua.tag_names.index(p["tag"])]
        p["ambiguous_supported"] = bool(s["n_pos"] >= cfg.ambiguous_min_support and s["n_neg"] >= cfg.ambiguous_min_support
                                        and s["n_stories"] >= cfg.ambiguous_min_stories)
        if p["passes"] and p["ambiguous_supported"]:
            b = bootstrap_auroc(cols[p["unit"]][s["rows"]], s["y"], story_o[s["rows"]], weights, strata=s["strata"])
            p.update(ambiguous_auroc=float(b.estimate), ambiguous_ci=[float(b.ci_low), float(b.ci_high)],
                     ambiguous_p=float(b.p_value))
            tested.append(p)
    for p, q in zip(tested, bh_qvalues(np.array([p["ambiguous_p"] for p in tested]))):
        p["ambiguous_q"] = float(q)
        p["beyond_identity"] = bool(p["ambiguous_ci"][0] > 0.5 and q < cfg.fdr)


def _summary(ua: UnitActivations, rows, paper, cfg: IdentityConfig) -> dict[str, Any]:
    per_tag = {t: {"pos": 0, "token": 0, "untestable": 0, "none": 0} for t in ua.tag_names}
    for r in rows:
        per_tag[r["tag"]][r["category"] or "none"] += 1
    paper_tag = {t: {"n_units": 0, "n_beyond_identity": 0, "best_share": 0.0, "best_unit": None, "best_n_types": 0}
                 for t in ua.tag_names}
    for p in paper:
        d = paper_tag[p["tag"]]
        d["n_units"] += int(p["passes"])
        d["n_beyond_identity"] += int(p.get("beyond_identity", False))
        if (p["share"], p["n_types"]) > (d["best_share"], d["best_n_types"]):
            d.update(best_share=p["share"], best_unit=p["name"], best_n_types=p["n_types"])
    return {
        "n_units": ua.n_units, "tags": ua.tag_names, "n_tokens_select": int(ua.selection.sum()),
        "n_tokens_held_out": int((~ua.selection).sum()), "n_stories_held_out": int(np.unique(ua.story[~ua.selection]).size),
        "n_candidates": len(rows), "categories_per_tag": per_tag,
        "n_pos_units": len({r["unit"] for r in rows if r["category"] == "pos"}),
        "n_token_units": len({r["unit"] for r in rows if r["category"] == "token"}),
        "n_ambiguous_tests": sum("ambiguous_p" in r for r in rows),
        "paper_specificity": {"rule": f">= {cfg.paper_precision:.0%} of the held-out top-{cfg.top_k} activations carry the "
                                      f"tag dominating the selection half's top-{cfg.top_k}, across >= {cfg.paper_min_types} word types",
                              "n_units": sum(p["passes"] for p in paper), "per_tag": paper_tag},
        "config": dataclasses.asdict(cfg),
    }
