"""How many MLP neurons does it take to read a part of speech? k-sparse probes.

A single neuron may fall short of a selectivity threshold (say held-out AUROC 0.9 for NOUN)
while the MLP layer as a whole encodes the tag well: the information is then spread over
several neurons. :func:`sparse_probe_curve` measures this directly. On the train half of the
stories it ranks every MLP neuron (all layers) by how well it separates tag vs. not-tag on
its own (``|AUROC - 0.5|``), then fits a binary logistic regression on the top ``k`` neurons
for each ``k``; the curve reports the held-out AUROC on the other half. ``k = 1`` is the best
single neuron (either sign), the last point uses every neuron (the dense ceiling);
``k_for_0.9`` is the smallest ``k`` reaching 0.9 held out. The curves come back as
:class:`SparseProbeResults` (saved as ``sparse_probes.json``).

Next to each curve (``identity_ks``): the token-id lookup and the embedding probe (``lexical``), and
for a few ``k`` the probe's AUROC on ambiguous words and on unseen token ids (``identity``): a
high AUROC that the lookup matches is identity, not evidence that the neurons encode the tag;
``beyond_identity_ks`` lists the ``k`` that beat the lookup on ambiguous words or unseen ids
(:mod:`tinyinterp.analysis.probes.identity`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np

from tinyinterp.analysis.corpus.labels import label_corpus
from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.engine import mlp_hook
from tinyinterp.analysis.neurons.baselines import sparse_probe_scorer
from tinyinterp.analysis.neurons.identity import IdentityConfig
from tinyinterp.analysis.probes.dense import ProbeConfig, collect_features
from tinyinterp.analysis.probes.identity import halves_units, lexical_summary, probe_identity
from tinyinterp.analysis.results_io import JsonResult, jsonable
from tinyinterp.errors import ConfigError, DataError

DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64, 128)
SPARSE_JSON = "sparse_probes.json"


@dataclass
class SparseProbeResults(JsonResult):
    """Per tag: ``{"curve": [{"k", "auroc", "units", "best_single_auroc_train"}...], "k_for_0.9": k or None,
    "n_train", "n_test", "n_pos_test"}``; reads like a dict by tag. ``save(folder)`` writes ``sparse_probes.json``."""

    FILE: ClassVar[str] = SPARSE_JSON
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, tag: str) -> dict[str, Any]:
        return self.curves[tag]

    def __contains__(self, tag: object) -> bool:
        return tag in self.curves

    def __iter__(self) -> Iterator[str]:
        return iter(self.curves)

    def __len__(self) -> int:
        return len(self.curves)

    def items(self):
        return self.curves.items()

    def headline(self) -> dict[str, dict[str, Any]]:
        """Per tag: the smallest k reaching AUROC 0.9, the best single neuron's and every neuron's AUROC."""
        return {tag: {"k_for_0.9": v["k_for_0.9"], "k1_auroc": v["curve"][0]["auroc"],
                      "all_neurons_auroc": v["curve"][-1]["auroc"],
                      "lookup_auroc": (v.get("lexical") or {}).get("lookup", {}).get("auroc"),
                      "beyond_identity_ks": v.get("beyond_identity_ks")} for tag, v in self.curves.items()}

    def to_json_obj(self) -> dict[str, dict[str, Any]]:
        return self.curves

    @classmethod
    def from_json_obj(cls, data: Any) -> "SparseProbeResults":
        return cls(dict(data))


def unit_aurocs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of each column of ``x`` [tok, unit] for the binary labels ``y`` (ties count half)."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError("sparse probe: the tag never (or always) occurs in the train half; use more stories")
    ranks = rankdata(x, axis=0)  # [tok, unit], average ranks for ties
    return (ranks[y].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def sparse_curve(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray,
                 ks: Sequence[int] = DEFAULT_KS, C: float = 1.0, max_iter: int = 500) -> list[dict]:
    """Held-out AUROC of logistic regressions on the top-k units (ranked on the train half).

    ``x_*``: features [tok, unit]; ``y_*``: bool [tok]. Returns one row per k (capped at the
    number of units; the number of units itself is always the last row).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    if x_tr.shape[1] != x_te.shape[1]:
        raise ConfigError("sparse_curve: train and test features have different numbers of units")
    if y_te.all() or not y_te.any():
        raise DataError("sparse probe: the tag never (or always) occurs in the test half; use more stories")
    a = unit_aurocs(x_tr, y_tr)
    order = np.argsort(-np.abs(a - 0.5), kind="stable")
    n_units = x_tr.shape[1]
    rows = []
    for k in sorted({min(int(k), n_units) for k in ks if int(k) >= 1} | {n_units}):
        units = order[:k]
        scaler = StandardScaler().fit(x_tr[:, units])
        clf = LogisticRegression(C=C, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(scaler.transform(x_tr[:, units]), y_tr)
        score = clf.decision_function(scaler.transform(x_te[:, units]))
        rows.append({"k": k, "auroc": float(roc_auc_score(y_te, score)), "units": units[:16].tolist(),
                     "best_single_auroc_train": float(a[order[0]])})
    return rows


def sparse_probe_curve(model, corpus: TaggedCorpus, tags: Sequence[str] = ("NOUN", "VERB", "ADJ"),
                       ks: Sequence[int] = DEFAULT_KS, max_tokens: int = 8000, split_seed: int = 0,
                       batch_tokens: int = 4096, identity_ks: Sequence[int] = (1, 8, 64),
                       n_boot: int = 500) -> SparseProbeResults:
    """k-sparse probe curves for ``tags`` from the MLP neurons of every layer (see the module docstring).

    Returns a :class:`SparseProbeResults` (one curve per tag that occurs in the corpus); unit ``u`` is
    neuron ``u % d_mlp`` of layer ``u // d_mlp``.
    """
    if model.cfg.d_mlp is None or model.cfg.attn_only:
        raise ConfigError("model has no MLP layers; sparse probes read MLP neurons")
    labels = label_corpus(corpus)
    cfg = ProbeConfig(max_tokens=max_tokens, split_seed=split_seed, batch_tokens=batch_tokens, progress=False)
    hooks = [mlp_hook(x) for x in range(model.cfg.n_layers)]
    halves = corpus.split_indices(split_seed)
    f_tr, t_tr, w_tr, i_tr = collect_features(model, corpus, labels, halves[0], hooks, cfg, "sparse probes: train half")
    f_te, t_te, w_te, i_te = collect_features(model, corpus, labels, halves[1], hooks, cfg, "sparse probes: test half")
    x_tr, x_te = np.concatenate([f_tr[h] for h in hooks], 1), np.concatenate([f_te[h] for h in hooks], 1)
    ua = halves_units(x_tr, x_te, (t_tr, w_tr, i_tr), (t_te, w_te, i_te), labels.tags, labels.words) if identity_ks else None
    idc = IdentityConfig(n_boot=n_boot)
    lex = lexical_summary(ua, model.W_E.detach().cpu().numpy(), idc) if ua is not None else None
    out = {}
    for tag in tags:
        if tag not in labels.tags:
            continue
        t = labels.tags.index(tag)
        curve = sparse_curve(x_tr, t_tr == t, x_te, t_te == t, ks)
        reach = [r["k"] for r in curve if r["auroc"] >= 0.9]
        out[tag] = {"curve": curve, "k_for_0.9": reach[0] if reach else None,
                    "n_train": len(t_tr), "n_test": len(t_te), "n_pos_test": int((t_te == t).sum())}
        if ua is not None:
            checks = [{"k": k, **probe_identity(ua, sparse_probe_scorer(k, tags=[tag]), lex["_full"], idc, [tag])["per_tag"][tag]}
                      for k in sorted({min(int(k), ua.n_units) for k in identity_ks})]
            out[tag].update(lexical=jsonable(lex["per_tag"][tag]), identity=jsonable(checks),
                            beyond_identity_ks=[c["k"] for c in checks if c["beyond_identity"]])
    return SparseProbeResults(out)
