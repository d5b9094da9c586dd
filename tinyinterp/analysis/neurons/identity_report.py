"""One call that runs units through the identity rules, the lexical baselines and the probes.

:func:`identity_report` takes any :class:`~tinyinterp.analysis.neurons.units.UnitActivations`
(neurons, SAE features) and returns a JSON-ready dict:

* ``rows`` — candidate unit x tag rows (:func:`~tinyinterp.analysis.neurons.identity.classify_units`),
  each with the tag's lookup and embedding numbers beside the unit's (``lookup_auroc``, ...);
* ``summary`` — counts per category and tag, the paper-form specificity result,
  ``lexical_baseline`` per tag, and the dense / k-sparse probes on the units with their
  ``beyond_identity`` flags (a probe counts as encoding a tag beyond identity only where it
  beats the lookup on ambiguous words or unseen word types);
* ``paper`` — the per-unit paper-form test.

For a model's MLP neurons the same rules are the decision of
:func:`~tinyinterp.analysis.neurons.selection.find_pos_neurons` (``neurons.json``); this function is
for other units, e.g. sparse-autoencoder features.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import numpy as np

from tinyinterp.analysis.neurons.baselines import beyond_identity, evaluate_scorer, lexical_baseline, probe_scorer, sparse_probe_scorer
from tinyinterp.analysis.neurons.units import UnitActivations
from tinyinterp.analysis.neurons.identity import IdentityConfig, classify_units

log = logging.getLogger(__name__)

__all__ = ["identity_report", "identity_tables"]

_JOIN = ("auroc", "ap_lift", "ambiguous_auroc", "unseen_auroc")


def identity_report(ua: UnitActivations, W_E: np.ndarray | None = None, cfg: IdentityConfig | None = None,
                    dense_probe: bool = True, sparse_ks: Sequence[int] = (1, 8, 64),
                    checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Identity rules + lexical baselines (+ dense and k-sparse probes on the units); JSON-ready.
    ``checkpoint(report)`` is called with the partial report after each stage (e.g. to save it)."""
    cfg = cfg or IdentityConfig()
    t0 = time.perf_counter()
    res = classify_units(ua, cfg)
    timing = {"rules_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    log.info("identity: lexical baselines")
    lexical = lexical_baseline(ua, W_E, cfg)
    timing["lexical_s"] = time.perf_counter() - t0
    for r in res.rows:
        for base, m in lexical[r["tag"]].items():
            for k in _JOIN:
                r[f"{base}_{k}"] = m[k]
    probes: dict[str, Any] = {}
    summary = dict(res.summary)
    summary.update(lexical_baseline=lexical, probes=probes, timing=timing, beyond_identity_tags={})
    rep = {"rows": res.rows, "summary": summary, "paper": res.paper}
    if checkpoint is not None:
        checkpoint(rep)
    t0 = time.perf_counter()
    scorers = ([("dense", probe_scorer())] if dense_probe else []) + [(f"sparse_k{k}", sparse_probe_scorer(k))
                                                                      for k in sparse_ks if k <= ua.n_units]
    for name, scorer in scorers:
        log.info("identity: probe %s", name)
        m = evaluate_scorer(ua, scorer, cfg)
        probes[name] = {"metrics": m, "flags": beyond_identity(m, lexical, cfg.fdr)}
        summary["beyond_identity_tags"][name] = sorted(t for t, f in probes[name]["flags"].items() if f["beyond_identity"])
        timing["probes_s"] = time.perf_counter() - t0
        if checkpoint is not None:
            checkpoint(rep)
    return rep


def identity_tables(rep: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two display tables: per tag (categories, paper form, lexical baseline) and per candidate row."""
    s = rep["summary"]
    per_tag = []
    for tag, c in s["categories_per_tag"].items():
        lex = s["lexical_baseline"].get(tag, {})
        paper = s["paper_specificity"]["per_tag"][tag]
        per_tag.append({"tag": tag, **{k: c[k] for k in ("pos", "token", "untestable", "none")},
                        "paper-form units": paper["n_units"], "paper-form beyond identity": paper.get("n_beyond_identity", 0),
                        "lookup AUROC": lex.get("lookup", {}).get("auroc"),
                        "embedding AUROC, unseen ids": lex.get("embedding", {}).get("unseen_auroc")})
    rows = []
    for r in rep["rows"]:
        ci = [r.get("ambiguous_ci_low"), r.get("ambiguous_ci_high")]
        rows.append({"unit": r["name"], "tag": r["tag"], "category": r["category"] or "none",
                     "reasons": "; ".join(r["reasons"]), "AUROC": r["auroc"], "top-k precision": r["top_k_precision"],
                     "AP lift": r["ap_lift"], "word types in top-k": r["n_top_types"], "AUROC unseen ids": r["unseen_auroc"],
                     "ambiguous AUROC": r["ambiguous_auroc"],
                     "ambiguous CI": "" if ci[0] is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]",
                     "ambiguous n": f"{r['ambiguous_n_pos']}/{r['ambiguous_n_neg']}",
                     "lookup AUROC": r.get("lookup_auroc"), "embedding AUROC unseen": r.get("embedding_unseen_auroc")})
    return per_tag, rows
