"""Lexical baselines for the probes: does a probe read a tag beyond what token identity gives?

In TinyStories the part of speech is almost a function of the token, so a probe's held-out
accuracy or AUROC says little by itself. :func:`probe_identity` scores a probe with the same
three tests as the neurons (:func:`~tinyinterp.analysis.neurons.baselines.evaluate_scorer`):
held out, within one token id on ambiguous words (story-bootstrap CI; a lookup scores exactly
0.5 there), and on token ids unseen in training; and next to it the token-id lookup and the
embedding probe (:func:`~tinyinterp.analysis.neurons.baselines.lexical_baseline`). A tag is
claimed ``beyond_identity`` only where the probe beats the lookup on ambiguous words (CI above
the lookup, BH over tags) or on unseen token ids (both folds).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tinyinterp.analysis.neurons.baselines import Scorer, beyond_identity, evaluate_scorer, lexical_baseline
from tinyinterp.analysis.neurons.identity import IdentityConfig
from tinyinterp.analysis.neurons.units import UnitActivations

__all__ = ["halves_units", "probe_identity", "lexical_summary"]

_KEEP = ("auroc", "ambiguous_auroc", "ambiguous_ci", "unseen_auroc")


def halves_units(x_tr: np.ndarray, x_te: np.ndarray, lab_tr: tuple, lab_te: tuple, tag_names: list[str],
                 word_names: list[str]) -> UnitActivations:
    """Train half (selects) + test half (held out) as one :class:`UnitActivations`.
    ``lab_*``: ``(tags, words, {"token_ids", "story"})`` as :func:`~tinyinterp.analysis.probes.dense.collect_features`
    returns them."""
    (t_tr, w_tr, i_tr), (t_te, w_te, i_te) = lab_tr, lab_te
    return UnitActivations(
        acts=np.concatenate([x_tr, x_te]).astype(np.float32), tags=np.concatenate([t_tr, t_te]),
        token_ids=np.concatenate([i_tr["token_ids"], i_te["token_ids"]]), words=np.concatenate([w_tr, w_te]),
        story=np.concatenate([i_tr["story"], i_te["story"]]),
        selection=np.r_[np.ones(len(t_tr), bool), np.zeros(len(t_te), bool)], tag_names=list(tag_names),
        word_names=list(word_names))


def probe_identity(ua: UnitActivations, scorer: Scorer, lexical: dict[str, dict[str, Any]], cfg: IdentityConfig,
                   tags: Sequence[str] | None = None) -> dict[str, Any]:
    """Per tag (``tags``: only these): the probe's held-out / ambiguous-word / unseen-id AUROC and whether it beats
    the lookup; plus ``beyond_identity``, the tags where it does."""
    m = evaluate_scorer(ua, scorer, cfg)
    tags = list(tags) if tags is not None else list(m)
    m = {t: m[t] for t in tags}
    flags = beyond_identity(m, {t: lexical[t] for t in tags}, cfg.fdr)
    per_tag = {t: {**{k: m[t][k] for k in _KEEP}, **{k: v for k, v in flags[t].items() if k.startswith("beats_")},
                   "beyond_identity": flags[t]["beyond_identity"]} for t in tags}
    return {"per_tag": per_tag, "beyond_identity": sorted(t for t in tags if flags[t]["beyond_identity"])}


def lexical_summary(ua: UnitActivations, W_E: np.ndarray | None, cfg: IdentityConfig) -> dict[str, Any]:
    """Per tag: lookup (and embedding) AUROC held out, on ambiguous words and on unseen ids; and the lookup's and the
    embedding probe's multiclass accuracy on the held-out tokens (to set beside a probe's accuracy)."""
    from tinyinterp.analysis.neurons.baselines import embedding_scorer, lookup_scorer

    lex = lexical_baseline(ua, W_E, cfg)
    sel, out = np.flatnonzero(ua.selection), np.flatnonzero(~ua.selection)
    acc = {"lookup": float((lookup_scorer()(ua, sel, out).argmax(1) == ua.tags[out]).mean())}
    if W_E is not None:
        acc["embedding"] = float((embedding_scorer(W_E)(ua, sel, out).argmax(1) == ua.tags[out]).mean())
    return {"per_tag": {t: {b: {k: v[k] for k in _KEEP} for b, v in d.items()} for t, d in lex.items()},
            "accuracy": acc, "_full": lex}
