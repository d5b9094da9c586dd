"""``find_pos_features``: SAE features through the neuron pipeline's decision rules.

Every live feature x tag gets what every neuron x tag gets
(:func:`~tinyinterp.analysis.neurons.identity_report.identity_report`): held-out AUROC and
specificity, the token-identity categories (``pos`` / ``token`` / ``untestable`` / none), the
lexical baselines (token-id lookup, embedding probe) and story-bootstrap CIs with BH correction.
The neurons of the SAE's layer go through the same rules on the same tokens, and a per-tag table
puts the best neuron beside the best feature (:mod:`~tinyinterp.analysis.features.compare`).
Then the top features of each ablated tag (chosen on the selection half) are mean-ablated
through the SAE's error-term splice on held-out stories, against random features matched on
activation variance and decoder norm (:func:`~tinyinterp.analysis.neurons.matched_ablation.ablation_table`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyinterp.analysis.features.compare import best_units, comparison_table, top_tag_shares
from tinyinterp.analysis.features.results import FeatureResults
from tinyinterp.analysis.features.units import decoder_norms, feature_units, splice_ablation_hook, splice_low_rank
from tinyinterp.analysis.neurons.identity import IdentityConfig, classify_units
from tinyinterp.analysis.neurons.identity_report import identity_report
from tinyinterp.analysis.neurons.matched_ablation import AblationConfig, AblationUnits, SelectionStats, ablation_table
from tinyinterp.analysis.neurons.metrics import auroc_matrix
from tinyinterp.analysis.neurons.units import UnitActivations
from tinyinterp.errors import ConfigError
from tinyinterp.sae.features import sae_hook_name

log = logging.getLogger(__name__)

__all__ = ["FeatureConfig", "find_pos_features"]


@dataclass
class FeatureConfig:
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    """The neurons' rules, unchanged (thresholds from docs/analysis.md)."""
    ablation: AblationConfig | None = field(default_factory=lambda: AblationConfig(n_units=5, max_stories=100))
    """Feature ablation (None: skip); ``tags`` None = :attr:`ablation_tags` plus every tag with a ``pos`` feature;
    ``n_random`` None = derived from the number of ablated tags (:meth:`AblationConfig.random_sets`), with its own
    Benjamini-Hochberg correction across those tags (separate from the neurons' table)."""
    ablation_tags: tuple[str, ...] = ("NOUN", "VERB", "ADJ")
    ablation_pool: int = 300
    """Random live features (besides the chosen ones) the matched random sets are drawn from."""
    split_seed: int = 0
    """Seed of the selection / held-out split of the stories (the neurons' ``split_seed``)."""
    name: str | None = None
    """How the SAE is named in the results (default: its folder name, else its hook)."""

    def __post_init__(self) -> None:
        if self.ablation_pool < 1:
            raise ConfigError(f"FeatureConfig.ablation_pool={self.ablation_pool}: must be >= 1")


def _columns(ua: UnitActivations, cols: np.ndarray) -> UnitActivations:
    return dataclasses.replace(ua, acts=np.ascontiguousarray(ua.acts[:, cols]), unit_names=[ua.unit_names[c] for c in cols],
                               unit_meta={k: v[cols] for k, v in ua.unit_meta.items()})


def _ablation(model, corpus, sae, feats: UnitActivations, tags: list[str], cfg: FeatureConfig,
              progress: bool) -> list[dict[str, Any]]:
    """Ablation table on the chosen features of ``tags`` plus a random pool to match them from."""
    acfg = dataclasses.replace(cfg.ablation, tags=tuple(tags))
    sel = feats.selection
    auc, _, _ = auroc_matrix(feats.acts[sel], feats.tags[sel], feats.n_tags)
    chosen = {int(u) for t in tags for u in np.argsort(-np.nan_to_num(auc[:, feats.tag_names.index(t)], nan=0.0),
                                                        kind="stable")[: acfg.n_units]}
    rest = np.setdiff1d(np.arange(feats.n_units), sorted(chosen))
    pool = np.random.default_rng(acfg.seed).permutation(rest)[: cfg.ablation_pool]
    sub = _columns(feats, np.array(sorted(chosen | set(pool.tolist()))))
    idx = sub.unit_meta["feature"]
    sel = sub.selection
    auc, _, _ = auroc_matrix(sub.acts[sel], sub.tags[sel], sub.n_tags)
    stats = SelectionStats(layer=np.zeros(len(idx), dtype=int), neuron=np.asarray(idx), mean=sub.acts[sel].mean(0),
                           variance=sub.acts[sel].var(0), held_out=np.unique(sub.story[~sel]),
                           tag_names=list(sub.tag_names), auroc=auc, names=list(sub.unit_names))
    units = AblationUnits([(sae_hook_name(sae), int(i)) for i in idx], decoder_norms(model, sae, idx),
                          splice_ablation_hook(sae), "activation variance (selection half) and decoder norm",
                          low_rank=splice_low_rank(model, sae))
    return ablation_table(model, corpus, stats, acfg, progress=progress, units=units)


def find_pos_features(model, corpus, sae, cfg: FeatureConfig | None = None, neurons: UnitActivations | None = None,
                      progress: bool = False) -> FeatureResults:
    """Part-of-speech features of ``sae`` (an ``sae_lens.SAE`` or an SAE folder) on ``corpus``, beside the neurons.

    ``corpus``: a :class:`~tinyinterp.analysis.corpus.TaggedCorpus` or story files (tagged with spaCy).
    ``neurons``: the SAE layer's :func:`~tinyinterp.analysis.neurons.job.neuron_activations`, when already computed.
    Returns :class:`~tinyinterp.analysis.features.results.FeatureResults` (``save(folder)`` / ``load(folder)``).
    """
    from tinyinterp.analysis.corpus import TaggedCorpus

    cfg = cfg or FeatureConfig()
    name = cfg.name
    if isinstance(sae, (str, os.PathLike)):
        from tinyinterp.sae.load import load_sae

        name = name or Path(sae).name
        sae = load_sae(sae, model=model)
    name = name or sae_hook_name(sae)
    if not isinstance(corpus, TaggedCorpus):
        from tinyinterp.analysis.corpus.loading import load_corpus

        corpus = load_corpus(corpus, model, progress=progress)
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    feats, ua_n = feature_units(model, corpus, sae, cfg.split_seed, neurons=neurons)
    timing["activations_s"] = time.perf_counter() - t0
    log.info("features: %d live of %d on %d tokens", feats.n_units, sae.cfg.d_sae, len(feats.acts))
    t0 = time.perf_counter()
    rep = identity_report(feats, model.W_E.detach().cpu().numpy(), cfg.identity, dense_probe=False, sparse_ks=())
    neuron_rows = classify_units(ua_n, cfg.identity).rows
    timing["identity_s"] = time.perf_counter() - t0
    best_f, best_n = best_units(feats, rep["rows"], cfg.identity), best_units(ua_n, neuron_rows, cfg.identity)
    shares = top_tag_shares(feats, sorted({r["unit"] for r in rep["rows"]} | {b["index"] for b in best_f.values()}),
                            cfg.identity.top_k)
    for b in best_f.values():
        b["feature"], b["top_tags"] = int(feats.unit_meta["feature"][b["index"]]), shares[b["index"]]
    rows = [{"sae": name, "feature": int(feats.unit_meta["feature"][r["unit"]]), **r, "top_tags": shares[r["unit"]]}
            for r in rep["rows"]]
    pos = {kind: {t: sum(r["category"] == "pos" and r["tag"] == t for r in rs) for t in feats.tag_names}
           for kind, rs in (("features", rep["rows"]), ("neurons", neuron_rows))}
    s = rep["summary"]
    summary: dict[str, Any] = {
        "name": name, "hook": sae_hook_name(sae), "d_sae": int(sae.cfg.d_sae), "n_live": feats.n_units,
        "architecture": type(sae).__name__, **{k: s[k] for k in ("n_tokens_select", "n_tokens_held_out",
                                                                  "n_stories_held_out", "n_candidates", "n_pos_units",
                                                                  "n_token_units", "categories_per_tag",
                                                                  "paper_specificity", "lexical_baseline")},
        "neuron_categories_per_tag": {t: {c: sum((r["category"] or "none") == c and r["tag"] == t for r in neuron_rows)
                                          for c in ("pos", "token", "untestable", "none")} for t in feats.tag_names},
        "comparison": comparison_table(best_n, best_f, pos), "best_features": best_f, "best_neurons": best_n,
        "config": dataclasses.asdict(cfg),
    }
    if cfg.ablation is not None:
        t0 = time.perf_counter()
        tags = cfg.ablation.tags or tuple(dict.fromkeys([*cfg.ablation_tags, *(t for t, n in pos["features"].items() if n)]))
        tags = [t for t in tags if t in feats.tag_names]
        summary["ablation"] = _ablation(model, corpus, sae, feats, tags, cfg, progress) if tags else []
        timing["ablation_s"] = time.perf_counter() - t0
    summary["timing"] = {k: round(v, 2) for k, v in timing.items()}
    return FeatureResults(rows, {"saes": [summary]})
