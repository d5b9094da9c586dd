"""The decision of the neuron analysis: one row per neuron x tag tested, with its identity category.

A neuron is *tested* on a tag when the selection half selects it for that tag (AUROC >=
``identity.auroc_threshold`` on one token-id fold of the selection half); every such pair gets a
row, so a neuron selected for several tags has a row for each and every tag's list is complete.
Each row carries one ``category`` (``pos``, ``token``, ``untestable`` or None; see
:mod:`~tinyinterp.analysis.neurons.identity`) and its ``reasons``, sensitivity (held-out AUROC
with a story-bootstrap CI, story-level p and BH q over every row) and specificity (precision
among the top-k held-out activations, AP and AP lift over the base rate) side by side.

* :func:`exact_rows` — in memory (the default): the rows of
  :func:`~tinyinterp.analysis.neurons.identity.classify_units`, with the tag's lexical baselines
  (token-id lookup, embedding) and the held-out moments joined on.
* :func:`streaming_rows` — sharded / torchrun / ``in_memory=False`` runs: binned AUROC, AP from
  the exact top tail (:class:`~tinyinterp.analysis.neurons.tail_ap.TailHistogram`), the word-type
  test from the top-k buffer. The tests that need every token's activations (unseen token ids,
  the within-identity ambiguous-word test, story bootstrap) cannot run, so a replicated row that
  does not fail the word-type test is ``untestable`` with that reason, never ``pos``.
* :func:`category_summary` — counts per category per tag and the per-neuron counts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinyinterp.analysis.neurons.identity import CATEGORIES, IdentityConfig, IdentityResults
from tinyinterp.analysis.neurons.metrics import UnitColumns
from tinyinterp.analysis.neurons.ranks import block_rows
from tinyinterp.analysis.neurons.units import UnitActivations
from tinyinterp.analysis.neurons.stats import TagTests

__all__ = ["STREAMING_UNTESTABLE", "category_summary", "exact_rows", "held_out_moments", "sort_rows", "streaming_rows"]

STREAMING_UNTESTABLE = ("needs every token's activations, which a streaming (sharded, torchrun or in_memory=False) run "
                        "does not keep")
_LEXICAL = ("auroc", "ap_lift", "ambiguous_auroc", "unseen_auroc")


def _moments(rep: TagTests, u: int, t: int) -> dict[str, float]:
    return {"mean_pos": float(rep.mean_pos[u, t]), "mean_neg": float(rep.mean_neg[u, t]),
            "cohens_d": float(rep.cohens_d[u, t])}


def held_out_moments(ua: UnitActivations, pairs: list[tuple[int, int]], min_support: int) -> dict:
    """``{(unit, tag): {mean_pos, mean_neg, cohens_d}}`` on the held-out tokens, exactly (float64 over the kept
    float32 activations; pooled SD with ``n - 1``, as :func:`~tinyinterp.analysis.neurons.stats.run_tests`
    from streamed moments); NaN when the tag has fewer than ``min_support`` positives or negatives."""
    out_rows = ~ua.selection
    cols, tags = UnitColumns(ua.acts[block_rows(out_rows)], [u for u, _ in pairs]), ua.tags[out_rows]
    res = {}
    for u, t in pairs:
        x, y = cols[u].astype(np.float64), tags == t
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos < min_support or n_neg < min_support:
            res[(u, t)] = {"mean_pos": math.nan, "mean_neg": math.nan, "cohens_d": math.nan}
            continue
        xp, xn = x[y], x[~y]
        pooled = math.sqrt(((n_pos - 1) * xp.var(ddof=1) + (n_neg - 1) * xn.var(ddof=1)) / (n_pos + n_neg - 2))
        d = (xp.mean() - xn.mean()) / pooled if pooled > 0 else 0.0
        res[(u, t)] = {"mean_pos": float(xp.mean()), "mean_neg": float(xn.mean()), "cohens_d": float(d)}
    return res


def exact_rows(ident: IdentityResults, moments: dict, lexical: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The identity rows as neuron rows: ``layer``/``neuron``/``tag`` + lexical baselines + held-out moments
    (:func:`held_out_moments`)."""
    tag_idx = {t: i for i, t in enumerate(ident.summary["tags"])}
    rows = []
    for r in ident.rows:
        row = {k: v for k, v in r.items() if k not in ("name",)}
        row["auroc_select"] = float(np.nanmax(r["auroc_select"])) if np.isfinite(r["auroc_select"]).any() else math.nan
        row["ambiguous_ci"] = [r.get("ambiguous_ci_low", math.nan), r.get("ambiguous_ci_high", math.nan)]
        for k in ("ambiguous_ci_low", "ambiguous_ci_high", "selected_folds", "unseen_fold"):
            row.pop(k, None)
        row.setdefault("unseen_ci", [math.nan, math.nan])
        for base, m in lexical.get(r["tag"], {}).items():
            for k in _LEXICAL:
                row[f"{base}_{k}"] = m[k]
        row.update(moments[(r["unit"], tag_idx[r["tag"]])], exact=True)
        rows.append(row)
    return rows


def streaming_rows(sel: TagTests, rep: TagTests, ap: np.ndarray, top: dict[str, np.ndarray], tags: list[str],
                   layers: list[int], d_mlp: int, cfg: IdentityConfig) -> list[dict[str, Any]]:
    """Rows from streamed statistics: ``token`` when the top-k holds too few word types, else ``untestable``."""
    thr = cfg.auroc_threshold
    selected = sel.valid & (np.nan_to_num(sel.auroc, nan=0.0) >= thr)
    rows = []
    for u, t in zip(*np.nonzero(selected)):
        u, t = int(u), int(t)
        n_top = int(top["filled"][u].sum())
        prec = float((top["tag"][u] == t).sum() / n_top) if n_top else math.nan
        n_types = int(top["n_types"][u, t])
        base = float(rep.n_pos[u, t] / max(rep.n_pos[u, t] + rep.n_neg[u, t], 1))
        replicated = bool(np.nan_to_num(rep.auroc[u, t], nan=0.0) >= thr)
        if not replicated:
            category, reasons = None, ["not replicated on the held-out half (AUROC below threshold)"]
        elif n_types < cfg.min_top_types:
            category, reasons = "token", ["word types among top activations",
                                          f"untestable: unseen token ids, ambiguous words ({STREAMING_UNTESTABLE})"]
        else:
            category, reasons = "untestable", [f"no support: unseen token ids, ambiguous words ({STREAMING_UNTESTABLE})"]
        rows.append({
            "unit": u, "layer": layers[u // d_mlp], "neuron": u % d_mlp, "tag": tags[t],
            "auroc_select": float(sel.auroc[u, t]), "auroc": float(rep.auroc[u, t]), "auroc_err": float(rep.auroc_err[u, t]),
            "auroc_ci": [math.nan, math.nan], "p_value": math.nan, "q_value": math.nan,
            "n_pos": int(rep.n_pos[u, t]), "n_neg": int(rep.n_neg[u, t]), "replicated": replicated,
            "ap": float(ap[u, t]), "base_rate": base, "ap_lift": float(ap[u, t]) / base if base > 0 else math.nan,
            "top_k_precision": prec, "n_top_types": n_types,
            "unseen_auroc": math.nan, "unseen_ci": [math.nan, math.nan], "ambiguous_auroc": math.nan,
            "ambiguous_ci": [math.nan, math.nan], "ambiguous_q": math.nan,
            "category": category, "reasons": reasons, **_moments(rep, u, t), "exact": False,
        })
    return rows


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``pos`` first, then ``token``, ``untestable``, not replicated; by tag, best held-out AUROC first."""
    def key(r):
        c = CATEGORIES.index(r["category"]) if r["category"] in CATEGORIES else len(CATEGORIES)
        return c, r["tag"], -np.nan_to_num(r["auroc"], nan=-1.0), r["layer"], r["neuron"]
    return sorted(rows, key=key)


def category_summary(rows: list[dict[str, Any]], tags: list[str]) -> dict[str, Any]:
    """Counts per category per tag (``none``: selected, not replicated) and neurons with each category."""
    per_tag = {t: {"pos": 0, "token": 0, "untestable": 0, "none": 0} for t in tags}
    for r in rows:
        per_tag[r["tag"]][r["category"] or "none"] += 1
    neurons = {c: len({(r["layer"], r["neuron"]) for r in rows if r["category"] == c}) for c in CATEGORIES}
    best: dict[str, float] = {}
    for r in rows:
        if np.isfinite(r["auroc"]):
            best[r["tag"]] = max(best.get(r["tag"], -1.0), float(r["auroc"]))
    return {"n_candidates": len(rows), "categories_per_tag": per_tag,
            "pos_per_tag": {t: c["pos"] for t, c in per_tag.items()},
            "token_per_tag": {t: c["token"] for t, c in per_tag.items()},
            "n_pos_neurons": neurons["pos"], "n_token_neurons": neurons["token"],
            "n_untestable_neurons": neurons["untestable"], "best_auroc_by_tag": best}
