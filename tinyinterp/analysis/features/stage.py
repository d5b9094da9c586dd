"""The ``features`` stage of :func:`tinyinterp.analyze` (``analyze --features SAE_DIR ...``).

For each SAE folder: load it checked against the model (:func:`tinyinterp.sae.load.load_sae`),
run :func:`~tinyinterp.analysis.features.find.find_pos_features` on the analysis corpus with the
analysis' identity rules and story split, and write ``features.json`` / ``features.csv`` /
``features_summary.json`` for all of them together; the summary gets ``features``: per SAE its
hook, live features, categories per tag and the per-tag table best neuron vs best feature.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tinyinterp.analysis.features.find import FeatureConfig, find_pos_features
from tinyinterp.analysis.features.results import FeatureResults

log = logging.getLogger(__name__)

__all__ = ["check_saes", "features_stage", "sae_names"]


def sae_names(paths) -> list[str]:
    """A name per SAE folder: the folder's name (``blocks.0.mlp.hook_post``), numbered when two share one."""
    names = [Path(p).name for p in paths]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def check_saes(model, paths) -> list:
    """Load every SAE folder checked against ``model`` (one-line :class:`CheckpointError` for a bad one)."""
    from tinyinterp.analysis.features.units import mlp_layer
    from tinyinterp.sae.load import load_sae

    saes = [load_sae(p, model=model) for p in paths]
    for sae in saes:
        mlp_layer(sae)
    return saes


def summary_entry(s: dict[str, Any]) -> dict[str, Any]:
    keep = ("hook", "d_sae", "n_live", "architecture", "categories_per_tag", "neuron_categories_per_tag", "comparison")
    out = {k: s[k] for k in keep}
    out["ablation"] = [{k: a[k] for k in ("tag", "units", "delta_target", "delta_target_ci", "delta_off_target", "ratio",
                                           "random_delta_target_mean", "n_random", "p_random", "q_random",
                                           "significant")} for a in s.get("ablation", [])]
    return out


def _kept_layer(run, sae):
    """The SAE layer's neuron activations the shared pass kept (``NeuronResults.activations``), when they are
    what :func:`~tinyinterp.analysis.neurons.job.neuron_activations` would compute (same analysed tokens, same
    order): the features then need no second forward pass. None otherwise."""
    from tinyinterp.analysis.features.units import mlp_layer
    from tinyinterp.analysis.neurons.config import NeuronConfig

    ua, ncfg, default = getattr(run.neurons, "activations", None), run.cfg.neurons, NeuronConfig()
    if ua is None or (ncfg.include_continuations, tuple(ncfg.exclude_tags)) != (default.include_continuations,
                                                                               tuple(default.exclude_tags)):
        return None
    layer = mlp_layer(sae)
    cols = np.flatnonzero(ua.unit_meta["layer"] == layer)
    if not len(cols):
        return None
    if len(cols) == ua.n_units:
        return ua
    return dataclasses.replace(ua, acts=np.ascontiguousarray(ua.acts[:, cols]), unit_names=[ua.unit_names[i] for i in cols],
                               unit_meta={k: v[cols] for k, v in ua.unit_meta.items()})


def features_stage(run) -> None:
    """Run every SAE of ``run.cfg.features`` through :func:`find_pos_features`; save; summarise."""
    cfg = run.cfg
    fcfg = dataclasses.replace(cfg.feature_config or FeatureConfig(), identity=cfg.neurons.identity,
                               split_seed=cfg.neurons.split_seed)  # the caller's config stays as given
    parts = []
    for path, name, sae in zip(cfg.features, sae_names(cfg.features), check_saes(run.model, cfg.features)):
        log.info("features: %s", path)
        parts.append(find_pos_features(run.model, run.corpus, sae, dataclasses.replace(fcfg, name=name),
                                       neurons=_kept_layer(run, sae), progress=run.progress))
    if run.neurons is not None:
        run.neurons.activations = None  # the last reader is done: free them
    res = FeatureResults.combine(parts)
    res.save(run.out)
    run.features = res
    run.summary["features"] = {s["name"]: summary_entry(s) for s in res.saes}


def comparison_text(features: dict[str, Any]) -> str:
    """The summary's per-tag tables as plain text (what ``analyze --features`` prints)."""
    def num(v) -> str:
        return "  -  " if v is None else f"{v:.3f}"

    lines = []
    for name, s in features.items():
        lines.append(f"{name}: {s['n_live']} live of {s['d_sae']} features; held-out AUROC / ambiguous-word AUROC / "
                     "top-50 precision / word types / category, best by selection-half AUROC")
        for r in s["comparison"]:
            lines.append(f"  {r['tag']:6s} neuron {str(r['neuron_unit']):9s} {num(r['neuron_auroc'])} "
                         f"{num(r['neuron_ambiguous_auroc'])} {num(r['neuron_top_k_precision'])} "
                         f"{r['neuron_n_top_types'] or 0:3d} {r['neuron_category']:10s} | feature {str(r['feature_unit']):10s} "
                         f"{num(r['feature_auroc'])} {num(r['feature_ambiguous_auroc'])} {num(r['feature_top_k_precision'])} "
                         f"{r['feature_n_top_types'] or 0:3d} {r['feature_category']} (pos features {r['n_pos_features']}, "
                         f"pos neurons {r['n_pos_neurons']})")
    return "\n".join(lines)
