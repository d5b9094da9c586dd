"""Attention heads: local, semantic, sink or mixed, with scores and evidence.

* :mod:`~tinyinterp.analysis.heads.calibration` — offset profiles and content dependence on a subset;
* :mod:`~tinyinterp.analysis.heads.scores` — the streaming pass: per-head sums over every story;
* :mod:`~tinyinterp.analysis.heads.detectors` — TransformerLens's head detectors (a cross-check);
* :mod:`~tinyinterp.analysis.heads.classify` — :class:`HeadConfig` (every threshold), :func:`classify_heads`;
* :mod:`~tinyinterp.analysis.heads.axes` — the label: two axes against their nulls;
* :mod:`~tinyinterp.analysis.heads.effects_pass` / :mod:`~tinyinterp.analysis.heads.effects` — output effects (shared pass);
* :mod:`~tinyinterp.analysis.heads.ablation`, :mod:`~tinyinterp.analysis.heads.claims` — ablations, the paper claim;
* :mod:`~tinyinterp.analysis.heads.results` — :class:`HeadRecord`, :class:`HeadResults` (save/load).
"""

from tinyinterp.analysis.heads.classify import HeadConfig, HeadJob, classify_heads, pattern_label
from tinyinterp.analysis.heads.results import LABELS, PATTERN_LABELS, HeadRecord, HeadResults
from tinyinterp.analysis.heads.scores import CATEGORIES

__all__ = ["CATEGORIES", "LABELS", "PATTERN_LABELS", "HeadConfig", "HeadJob", "HeadRecord", "HeadResults", "classify_heads", "pattern_label"]
