"""Best neuron vs best feature, per tag: chosen on the selection half, measured on the held-out half.

For each tag, :func:`best_units` takes the unit with the highest selection-half AUROC (so the
choice never sees the held-out stories) and reports on the held-out half its AUROC, its
within-identity AUROC on ambiguous words (the lookup scores 0.5 there), the precision of its
top-``k`` activations for the tag, the word types with the tag among them, and the category the
identity rules gave it (``none`` when it is not a candidate or did not replicate).
:func:`comparison_table` puts a neuron row and a feature row side by side per tag.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinyinterp.analysis.neurons.identity import IdentityConfig
from tinyinterp.analysis.neurons.metrics import auroc_matrix, specificity, top_tokens
from tinyinterp.analysis.neurons.units import UnitActivations
from tinyinterp.analysis.stats import weighted_auroc

__all__ = ["best_units", "comparison_table", "top_tag_shares"]


def top_tag_shares(ua: UnitActivations, units: list[int], k: int) -> dict[int, dict[str, float]]:
    """Per unit: the tags of its held-out top-``k`` activations, as shares (the POS breakdown)."""
    if not units:
        return {}
    out = ~ua.selection
    spec = specificity(top_tokens(ua.acts[out][:, units], k), ua.tags[out], ua.words[out], ua.n_tags)
    return {u: {ua.tag_names[t]: round(float(p), 4) for t, p in enumerate(row) if p > 0}
            for u, row in zip(units, spec["precision"])}


def best_units(ua: UnitActivations, rows: list[dict[str, Any]], cfg: IdentityConfig | None = None) -> dict[str, dict[str, Any]]:
    """``{tag: metrics of the unit with the best selection-half AUROC}`` (see the module docstring)."""
    cfg = cfg or IdentityConfig()
    sel, out = ua.selection, ~ua.selection
    sel_auc, _, _ = auroc_matrix(ua.acts[sel], ua.tags[sel], ua.n_tags, cfg.min_support)  # [unit, tag]
    best = np.argmax(np.nan_to_num(sel_auc, nan=-1.0), axis=0)  # [tag]
    units = sorted(set(best.tolist()))
    X = ua.acts[out][:, units]
    col = {u: j for j, u in enumerate(units)}
    held_auc, _, _ = auroc_matrix(X, ua.tags[out], ua.n_tags, cfg.min_support)
    spec = specificity(top_tokens(X, cfg.top_k), ua.tags[out], ua.words[out], ua.n_tags)
    amb = ua.ambiguous_sets(cfg.ambiguous_min_count)
    category = {(r["unit"], r["tag"]): r for r in rows}
    res = {}
    for t, tag in enumerate(ua.tag_names):
        if not np.isfinite(sel_auc[:, t]).any():
            continue
        u, j, s = int(best[t]), col[int(best[t])], amb[t]
        r = category.get((u, tag), {})
        res[tag] = {
            "unit": ua.unit_names[u], "index": u, "selection_auroc": float(sel_auc[u, t]),
            "auroc": float(held_auc[j, t]),
            "ambiguous_auroc": float(weighted_auroc(X[s["rows"], j], s["y"], strata=s["strata"]))
            if s["n_pos"] and s["n_neg"] else math.nan,
            "ambiguous_ci": [r.get("ambiguous_ci_low", math.nan), r.get("ambiguous_ci_high", math.nan)],
            "ambiguous_n": [s["n_pos"], s["n_neg"]],
            "top_k_precision": float(spec["precision"][j, t]), "n_top_types": int(spec["n_types"][j, t]),
            "category": r.get("category") or "none",
            "reasons": r.get("reasons", ["not a candidate (selection-half AUROC below threshold)"]),
        }
    return res


def comparison_table(neurons: dict[str, dict[str, Any]], features: dict[str, dict[str, Any]],
                     pos_counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """One row per tag: best neuron vs best feature, and how many features / neurons are ``pos``."""
    keep = ("unit", "auroc", "ambiguous_auroc", "top_k_precision", "n_top_types", "category")
    out = []
    for tag in sorted(set(neurons) | set(features)):
        n, f = neurons.get(tag, {}), features.get(tag, {})
        out.append({"tag": tag, **{f"neuron_{k}": n.get(k) for k in keep}, **{f"feature_{k}": f.get(k) for k in keep},
                    "n_pos_neurons": pos_counts.get("neurons", {}).get(tag, 0),
                    "n_pos_features": pos_counts.get("features", {}).get(tag, 0)})
    return out
