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

:func:`neuron_identity_report` does it for a model's MLP neurons (``python -m
tinyinterp.analysis.neurons.identity_report --help`` runs it from the shell).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from tinyinterp.analysis.neurons.baselines import beyond_identity, evaluate_scorer, lexical_baseline, probe_scorer, sparse_probe_scorer
from tinyinterp.analysis.neurons.matched_ablation import AblationConfig, ablation_table, neuron_units
from tinyinterp.analysis.neurons.units import UnitActivations, neuron_activations
from tinyinterp.analysis.neurons.identity import IdentityConfig, classify_units

log = logging.getLogger(__name__)

__all__ = ["IDENTITY_JSON", "identity_report", "identity_tables", "load_identity", "neuron_identity_report"]

IDENTITY_JSON = "neuron_identity.json"

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


def neuron_identity_report(model, corpus, cfg: IdentityConfig | None = None, layers: Sequence[int] | None = None,
                           split_seed: int = 0, ablation: AblationConfig | None = None, **kwargs) -> dict[str, Any]:
    """:func:`identity_report` for the MLP neurons of ``model`` on ``corpus`` (embedding baseline: ``model.W_E``);
    with ``ablation``, also :func:`~tinyinterp.analysis.neurons.matched_ablation.ablation_table` (key ``ablation``)."""
    t0 = time.perf_counter()
    ua = neuron_activations(model, corpus, layers, split_seed)
    t_act = time.perf_counter() - t0
    rep = identity_report(ua, model.W_E.detach().cpu().numpy(), cfg, **kwargs)
    rep["summary"]["timing"]["activations_s"] = t_act
    if ablation is not None:
        t0 = time.perf_counter()
        refs, norms, group = neuron_units(model, ua)
        rep["ablation"] = ablation_table(model, corpus, ua, refs, norms, group, ablation)
        rep["summary"]["timing"]["ablation_s"] = time.perf_counter() - t0
    return rep


def load_identity(folder) -> dict[str, Any] | None:
    """The ``neuron_identity.json`` of an analysis folder, or None when the analysis has none."""
    from pathlib import Path

    from tinyinterp.analysis.results_io import read_result_json

    return read_result_json(Path(folder) / IDENTITY_JSON, "tinyinterp analyze", default=None)


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


def _brief(rep: dict[str, Any]) -> str:
    s = rep["summary"]
    lines = [f"{s['n_units']} units, {s['n_tokens_held_out']} held-out tokens in {s['n_stories_held_out']} stories; "
             f"{s['n_candidates']} candidate rows"]
    for tag, c in s["categories_per_tag"].items():
        look = s["lexical_baseline"][tag]["lookup"]
        emb = s["lexical_baseline"][tag].get("embedding", {})
        paper = s["paper_specificity"]["per_tag"][tag]
        lines.append(f"{tag:6s} pos {c['pos']:3d} token {c['token']:3d} untestable {c['untestable']:3d} none {c['none']:3d} | "
                     f"lookup AUROC {look['auroc']:.3f} unseen {look['unseen_auroc']:.3f} | embedding unseen "
                     f"{emb.get('unseen_auroc', math.nan):.3f} | paper-form units {paper['n_units']} "
                     f"(best share {paper['best_share']:.2f} over {paper['best_n_types']} types), "
                     f"beyond identity {paper['n_beyond_identity']}")
    for name, p in s["probes"].items():
        lines.append(f"probe {name}: beyond identity for {s['beyond_identity_tags'][name] or 'no tag'}")
    for a in rep.get("ablation", []):
        lines.append(f"ablate {a['tag']:6s} top {len(a['units'])}: target {a['delta_target']:+.4f} off {a['delta_off_target']:+.4f} "
                     f"ratio {a['ratio']:.2f} | matched random target mean {a['random_delta_target_mean']:+.4f} p {a['p_random']:.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    from tinyinterp.analysis.neurons.controls import untrained_copy
    from tinyinterp.analysis.corpus import load_corpus
    from tinyinterp.atomic import write_json
    from tinyinterp.checkpoint import load_model

    ap = argparse.ArgumentParser(description="Neuron part-of-speech selectivity beyond token identity.")
    ap.add_argument("checkpoint")
    ap.add_argument("--text", nargs="+", required=True, help="story files (evaluation split)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--untrained", action="store_true", help="analyse an untrained copy (the null model)")
    ap.add_argument("--n-boot", type=int, default=IdentityConfig.n_boot)
    ap.add_argument("--no-probes", action="store_true", help="skip the dense and k-sparse probes")
    ap.add_argument("--sparse-k", type=int, nargs="*", default=[1, 8, 64], help="k of the k-sparse probes")
    ap.add_argument("--ablation-random", type=int, default=0,
                    help="run the per-tag ablation with this many matched random sets (0: no ablation)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = load_model(args.checkpoint)
    corpus = load_corpus(args.text, model)
    if args.untrained:
        model = untrained_copy(model)
    probes: dict[str, Any] = {"dense_probe": False, "sparse_ks": ()} if args.no_probes else {"sparse_ks": args.sparse_k}
    probes["checkpoint"] = lambda rep: write_json(args.out, rep)
    abl = AblationConfig(n_random=args.ablation_random) if args.ablation_random else None
    rep = neuron_identity_report(model, corpus, IdentityConfig(n_boot=args.n_boot), ablation=abl, **probes)
    rep["summary"]["source"] = {"checkpoint": args.checkpoint, "text": args.text, "untrained": args.untrained}
    write_json(args.out, rep)
    print(_brief(rep))


if __name__ == "__main__":
    main()
