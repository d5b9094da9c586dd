"""Lexical baselines: what token identity alone predicts, scored exactly like the model.

A *scorer* is ``scorer(ua, train_rows, test_rows) -> scores [n_test, tag]`` (higher: more
likely the tag), fit on ``train_rows`` only. The lookup and the embedding probe are functions of the
token id: they also carry ``score_ids`` and are scored and evaluated per distinct id, with the same
results (:mod:`~tinyinterp.analysis.neurons.id_scores`). Four are provided:

* :func:`lookup_scorer` — no model: the tag frequency of each token id on the training rows
  (smoothed toward the base rate; unseen ids get the base rate);
* :func:`embedding_scorer` — a multinomial logistic probe on the embedding rows ``W_E[token id]``;
* :func:`probe_scorer` — the same probe on unit activations (the dense probe);
* :func:`sparse_probe_scorer` — per tag, a logistic probe on the ``k`` units that separate it best
  on the training rows (the k-sparse probe).

:func:`evaluate_scorer` scores any of them on the three tests the identity rules use: the held-out
half (AUROC, AP, AP lift); ambiguous words (within-type AUROC with a story-bootstrap CI; a lookup
scores exactly 0.5 there); and unseen word types (fit on the selection half's fold-``f`` types,
score the held-out half's other fold). :func:`beyond_identity` then states, per tag, whether a
model scorer beats the lookup on ambiguous words or on unseen word types — the only evidence that
the model encodes a tag beyond identity.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from tinyinterp.analysis.stats import bh_qvalues, cluster_bootstrap_auroc, story_weights
from tinyinterp.analysis.neurons.id_scores import id_scorer, scores_on
from tinyinterp.analysis.neurons.units import UnitActivations
from tinyinterp.analysis.neurons.identity import IdentityConfig
from tinyinterp.analysis.neurons.metrics import auroc_matrix

log = logging.getLogger(__name__)

__all__ = ["Scorer", "beyond_identity", "embedding_scorer", "evaluate_scorer", "lexical_baseline", "lookup_scorer",
           "probe_scorer", "sparse_probe_scorer"]

Scorer = Callable[[UnitActivations, np.ndarray, np.ndarray], np.ndarray]


def lookup_scorer(alpha: float = 1.0) -> Scorer:
    """P(tag | token id) on the training rows, with ``alpha`` pseudo-counts at the base rate."""
    def score_ids(ua: UnitActivations, train: np.ndarray, ids: np.ndarray) -> np.ndarray:
        n_ids = int(ua.token_ids.max()) + 1
        counts = np.zeros((n_ids, ua.n_tags))
        np.add.at(counts, (ua.token_ids[train], ua.tags[train]), 1.0)
        prior = counts.sum(0) / max(counts.sum(), 1.0)
        table = (counts + alpha * prior) / (counts.sum(1, keepdims=True) + alpha)
        return table[ids]
    return id_scorer(score_ids)


def _logistic(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, n_tags: int, C: float,
              sample_weight: np.ndarray | None = None) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    scaler = StandardScaler().fit(x_tr, sample_weight=sample_weight)
    clf = LogisticRegression(C=C, max_iter=300)
    # one BLAS thread: these fits are small (thousands of rows), and a threaded BLAS spends more time
    # synchronising than computing (19x slower measured with OpenBLAS on 2 busy cores)
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore")  # convergence warnings: the held-out score is what we report
        clf.fit(scaler.transform(x_tr), y_tr, sample_weight=sample_weight)
        proba = clf.predict_proba(scaler.transform(x_te))
    out = np.zeros((len(x_te), n_tags))
    out[:, clf.classes_] = proba
    return out


def embedding_scorer(W_E: np.ndarray, C: float = 1.0) -> Scorer:
    """Logistic probe on ``W_E[token id]`` (``[d_vocab, d_model]``), fit on distinct (id, tag) pairs with counts."""
    W_E = np.asarray(W_E, dtype=np.float64)

    def score_ids(ua: UnitActivations, train: np.ndarray, ids: np.ndarray) -> np.ndarray:
        pairs, counts = np.unique(ua.token_ids[train].astype(np.int64) * ua.n_tags + ua.tags[train], return_counts=True)
        return _logistic(W_E[pairs // ua.n_tags], pairs % ua.n_tags, W_E[ids], ua.n_tags, C, counts.astype(float))
    return id_scorer(score_ids)


def probe_scorer(units: np.ndarray | None = None, C: float = 1.0, max_train: int = 20_000, seed: int = 0) -> Scorer:
    """Dense multinomial logistic probe on unit activations (``units``: a subset; None: all)."""
    def score(ua: UnitActivations, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        cols = slice(None) if units is None else np.asarray(units)
        tr = np.sort(np.random.default_rng(seed).permutation(train)[:max_train]) if len(train) > max_train else train
        return _logistic(ua.acts[tr][:, cols], ua.tags[tr], ua.acts[test][:, cols], ua.n_tags, C)
    return score


def sparse_probe_scorer(k: int, C: float = 1.0, max_train: int = 20_000, seed: int = 0,
                        tags: Sequence[str] | None = None) -> Scorer:
    """Per tag (``tags``: only these; the other columns stay 0): binary logistic probe on the ``k`` units with
    the largest ``|AUROC - 0.5|`` on the training rows."""
    def score(ua: UnitActivations, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        tr = np.sort(np.random.default_rng(seed).permutation(train)[:max_train]) if len(train) > max_train else train
        a, _, _ = auroc_matrix(ua.acts[tr], ua.tags[tr], ua.n_tags)  # [unit, tag]
        out = np.zeros((len(test), ua.n_tags))
        for t in range(ua.n_tags):
            if tags is not None and ua.tag_names[t] not in tags:
                continue
            y = ua.tags[tr] == t
            if not y.any() or y.all():
                continue
            cols = np.argsort(-np.abs(np.nan_to_num(a[:, t], nan=0.5) - 0.5), kind="stable")[:k]
            out[:, t] = _logistic(ua.acts[tr][:, cols], y.astype(int), ua.acts[test][:, cols], 2, C)[:, 1]
        return out
    return score


@dataclass
class _Split:
    """What :func:`evaluate_scorer` reads besides the scores: the halves, the story resamples, the ambiguous
    sets, and per type fold ``(train rows, test rows, positives [tag], test ids with the tag [tag])``."""

    sel: np.ndarray
    out: np.ndarray
    story_o: np.ndarray
    weights: np.ndarray
    sets: list[dict]
    unseen: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def _split(ua: UnitActivations, cfg: IdentityConfig, timings: dict[str, float]) -> _Split:
    sel, out = np.flatnonzero(ua.selection), np.flatnonzero(~ua.selection)
    fold = ua.id_fold(cfg.type_seed)
    _, story_o = np.unique(ua.story[out], return_inverse=True)
    t0 = time.perf_counter()
    weights = story_weights(int(story_o.max()) + 1, cfg.n_boot, cfg.boot_seed)
    timings["bootstrap_s"] += time.perf_counter() - t0
    unseen = []
    for f in (0, 1):
        tr, te = np.flatnonzero(ua.selection & (fold == f)), np.flatnonzero(~ua.selection & (fold == 1 - f))
        _, id_rank = np.unique(ua.token_ids[te], return_inverse=True)
        id_tag = np.bincount(id_rank * ua.n_tags + ua.tags[te], minlength=(id_rank.max(initial=-1) + 1) * ua.n_tags)
        n_types = (id_tag.reshape(-1, ua.n_tags) > 0).sum(0)
        unseen.append((tr, te, np.bincount(ua.tags[te], minlength=ua.n_tags), n_types))
    return _Split(sel, out, story_o, weights, ua.ambiguous_sets(cfg.ambiguous_min_count), unseen)


def evaluate_scorer(ua: UnitActivations, scorer: Scorer, cfg: IdentityConfig | None = None,
                    unseen_ci: bool = True, timings: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Per tag: held-out AUROC/AP/AP lift, within-type ambiguous AUROC (story-bootstrap CI), unseen-type AUROC
    (with a word-type-bootstrap CI unless ``unseen_ci`` is False: baselines only need the estimate).
    ``timings``: ``bootstrap_s`` there is increased by the seconds spent resampling. A scorer carrying
    ``score_ids`` (a function of the token id: :func:`lookup_scorer`, :func:`embedding_scorer`) is scored and
    evaluated per distinct token id (:mod:`~tinyinterp.analysis.neurons.id_scores`), with the same results."""
    cfg = cfg or IdentityConfig()
    timings = {} if timings is None else timings
    timings.setdefault("bootstrap_s", 0.0)
    return _evaluate(ua, scorer, cfg, _split(ua, cfg, timings), unseen_ci, timings)


def _evaluate(ua: UnitActivations, scorer: Scorer, cfg: IdentityConfig, sp: _Split, unseen_ci: bool,
              timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    held = scores_on(ua, scorer, sp.sel, sp.out)  # [held-out token, tag]
    tags_o = ua.tags[sp.out]
    unseen = [(scores_on(ua, scorer, tr, te), te, n_pos, n_types) for tr, te, n_pos, n_types in sp.unseen]
    res = {}
    for t, (name, s) in enumerate(zip(ua.tag_names, sp.sets)):
        base = float((tags_o == t).mean())
        row: dict[str, Any] = {"auroc": held.auroc(t), "ap": held.ap(t), "base_rate": base}
        row["ap_lift"] = row["ap"] / base if base > 0 else math.nan
        supported = s["n_pos"] >= cfg.ambiguous_min_support and s["n_neg"] >= cfg.ambiguous_min_support
        if supported:
            t0 = time.perf_counter()
            b = held.ambiguous_bootstrap(t, s["rows"], s["y"], sp.story_o[s["rows"]], sp.weights, s["strata"])
            timings["bootstrap_s"] += time.perf_counter() - t0
            row.update(ambiguous_auroc=float(b.estimate), ambiguous_ci=[float(b.ci_low), float(b.ci_high)],
                       ambiguous_p=float(b.p_value))
        else:
            row.update(ambiguous_auroc=math.nan, ambiguous_ci=[math.nan, math.nan], ambiguous_p=math.nan)
        per_fold, ci_low = [], []
        for scores, te, n_pos, n_types in unseen:
            ok = n_pos[t] >= cfg.min_support and len(te) - n_pos[t] >= cfg.min_support and n_types[t] >= cfg.unseen_min_types
            if ok and unseen_ci:
                t0 = time.perf_counter()
                b = cluster_bootstrap_auroc(scores.column(t), scores.tags == t, ua.token_ids[te], cfg.n_boot_types,
                                            cfg.boot_seed)
                est, lo = float(b.estimate), float(b.ci_low)
                timings["bootstrap_s"] += time.perf_counter() - t0
            else:
                est, lo = (scores.auroc(t) if ok else math.nan), math.nan
            per_fold.append(est)
            ci_low.append(lo)
        row["unseen_auroc_folds"], row["unseen_ci_low_folds"] = per_fold, ci_low
        row["unseen_auroc"] = float(np.nanmean(per_fold)) if np.isfinite(per_fold).any() else math.nan
        row["ambiguous_n_pos"], row["ambiguous_n_neg"] = s["n_pos"], s["n_neg"]
        res[name] = row
    return res


def lexical_baseline(ua: UnitActivations, W_E: np.ndarray | None = None, cfg: IdentityConfig | None = None,
                     timings: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """``{tag: {"lookup": metrics, "embedding": metrics}}`` (embedding only when ``W_E`` is given);
    ``timings``: see :func:`evaluate_scorer`."""
    cfg = cfg or IdentityConfig()
    timings = {} if timings is None else timings
    timings.setdefault("bootstrap_s", 0.0)
    sp = _split(ua, cfg, timings)  # shared by both scorers
    look = _evaluate(ua, lookup_scorer(), cfg, sp, False, timings)
    emb = _evaluate(ua, embedding_scorer(W_E), cfg, sp, False, timings) if W_E is not None else {}
    return {t: {"lookup": look[t], **({"embedding": emb[t]} if emb else {})} for t in ua.tag_names}


def beyond_identity(model: dict[str, dict[str, Any]], lexical: dict[str, dict[str, Any]],
                    fdr: float = 0.05) -> dict[str, dict[str, Any]]:
    """Per tag: does a model scorer beat the lookup (and the embedding) on ambiguous words or unseen types?

    Ambiguous words: the model's story-bootstrap CI lies above the baseline's estimate and its
    Benjamini–Hochberg q-value (over this scorer's tags) is below ``fdr``. Unseen types: in both
    type folds the model's word-type-bootstrap CI lies above the baseline's AUROC. ``beyond_identity``:
    it beats the lookup on ambiguous words (where the embedding, a function of the token id, scores
    like the lookup), or on unseen token ids both the lookup and, when given, the embedding (which
    generalises to unseen ids through shared directions without reading any context).
    """
    tags = list(model)
    q = dict(zip(tags, bh_qvalues(np.array([model[t]["ambiguous_p"] for t in tags]))))
    out = {}
    for tag, m in model.items():
        flags: dict[str, Any] = {"ambiguous_q": float(q[tag])}
        for base_name, b in lexical[tag].items():
            amb = np.isfinite(b["ambiguous_auroc"]) and m["ambiguous_ci"][0] > b["ambiguous_auroc"] and q[tag] < fdr
            folds = list(zip(m["unseen_ci_low_folds"], b["unseen_auroc_folds"]))
            uns = bool(folds) and all(np.isfinite(lo) and (not np.isfinite(y) or lo > y) for lo, y in folds)
            flags[f"beats_{base_name}_ambiguous"] = bool(amb)
            flags[f"beats_{base_name}_unseen"] = bool(uns)
        unseen = flags.get("beats_lookup_unseen", False) and flags.get("beats_embedding_unseen", True)
        flags["beyond_identity"] = flags.get("beats_lookup_ambiguous", False) or unseen
        out[tag] = flags
    return out
