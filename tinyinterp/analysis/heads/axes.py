"""Head labels from two continuous axes, each against a null; no rule order.

>>> scores = score_heads(model, corpus)                     # doctest: +SKIP
>>> rows = label_heads(scores)                              # doctest: +SKIP
>>> [(r["layer"], r["head"], r["label"]) for r in rows]     # doctest: +SKIP

Every head gets three independent attributes, each decided by its own test; the label lists the
ones that pass, in a fixed order (``local``, ``semantic``, ``sink``), or ``mixed`` when none does:

* **positional axis** — ``positional_r2``: R² of the head's attention rows predicted by its own
  mean attention-by-offset profile (over the uniform row). Passes when it reaches
  :attr:`AxisThresholds.positional_min_r2` (the 99th percentile of R² over null heads that have
  no positional component: untrained models and content-only surrogates, :mod:`~tinyinterp.analysis.heads.nulls`), or
  when TransformerLens' previous-token score reaches ``previous_token_min`` = 0.4 (the issue's
  criterion; the nulls' 99th percentile is reported beside it).
* **content axis** — ``content_js``: mean Jensen–Shannon divergence (bits) between a row on the
  real story and on the same story with its tokens shuffled, at least ``content_min_js`` (99th
  percentile over null heads with no content component: untrained models and position-only
  surrogates), **and** evidence of *which* content: some key category attended more than the
  head's offset profile predicts, with lift ≥ ``min_lift`` (99th percentile of the largest lift
  of the same null heads) and a Benjamini–Hochberg q ≤ ``fdr`` across every head × category test
  of the model (one-sided Wald test of lift > 1 with a story-bootstrap standard error, so the
  test is not limited by the number of resamples).
* **sink** — ``bos_mass`` ≥ 0.5: most of the attention on the first token. Definitional (a
  majority), not tuned.

A head passing both axes is ``local+semantic``: its pattern is largely predicted by distance
*and* content moves it measurably toward a category.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.heads.effects import EffectsConfig, HeadEffects, head_effects
from tinyinterp.analysis.heads.results import HeadResults
from tinyinterp.analysis.heads.scores import KEY_CATEGORIES
from tinyinterp.analysis.stats import bh_qvalues

__all__ = ["AxisThresholds", "HeadScores", "score_heads", "axis_values", "label_heads", "label_agreement_halves"]

ATTRIBUTES = ("local", "semantic", "sink")


@dataclass(frozen=True)
class AxisThresholds:
    """Thresholds of the label rule; every number was fixed before the bundled models were labelled.

    Derived by ``python -m tinyinterp.analysis.heads.nulls`` on the evaluation stories (null heads
    only; output in ``docs/head_thresholds.json``, method in ``docs/analysis.md``).
    """

    # 99th pct (0.5189, rounded up) of the held-out position-only R² over 128 null heads with no positional
    # component: untrained ts-1l/ts-4l shapes x 3 seeds (120) + content-only surrogates (8); docs/head_thresholds.json
    positional_min_r2: float = 0.519
    # TransformerLens previous-token score: the criterion for "local", not tuned (the positional
    # nulls' 99th pct is 0.034)
    previous_token_min: float = 0.4
    # 99th pct (0.1046, rounded up) of content JS over 130 null heads with no content component:
    # the same untrained heads (120) + position-only surrogates (10); docs/head_thresholds.json
    content_min_js: float = 0.105
    # 99th pct (1.6922, rounded up) of the largest category lift over those 130 content-null heads
    min_lift: float = 1.693
    fdr: float = 0.05  # Benjamini–Hochberg level across every head x category lift test of a model
    sink_min_bos: float = 0.5  # majority of the attention on the first token (definitional)
    min_category_expected: float = 0.002  # categories the profile predicts below this mass per row are not tested

    def __post_init__(self) -> None:
        from tinyinterp.errors import ConfigError

        for k, v in asdict(self).items():
            if not isinstance(v, (int, float)) or not (np.isnan(v) or v >= 0):
                raise ConfigError(f"AxisThresholds.{k}={v!r}: must be a number >= 0")
        if not 0 < self.fdr < 1:
            raise ConfigError(f"AxisThresholds.fdr={self.fdr!r}: must be in (0, 1)")


@dataclass
class HeadScores:
    """The attention scores of :func:`~tinyinterp.analysis.heads.classify_heads` and the output effects, from one pass."""

    heads: HeadResults
    effects: HeadEffects


def score_heads(model, corpus: TaggedCorpus, head_config=None, effects_config: EffectsConfig | None = None,
                progress: bool = False) -> HeadScores:
    """Attention scores and output effects of every head in one streaming pass (ablations after it, if enabled)."""
    from tinyinterp.analysis.heads.classify import HeadConfig, HeadJob
    from tinyinterp.analysis.engine import eval_mode

    hcfg = head_config if head_config is not None else HeadConfig(progress=progress)
    ecfg = effects_config if effects_config is not None else EffectsConfig(progress=progress)
    with eval_mode(model):
        job = HeadJob(model, corpus, hcfg)
        fx = head_effects(model, corpus, ecfg, profile=job.cal.profile, extra_consumers=[job.main], groups=job.groups)
        return HeadScores(job.finish(), fx)


def _lift_tests(fx: HeadEffects, min_expected: float) -> tuple[np.ndarray, np.ndarray, object]:
    """One-sided p (lift > 1), BH q over the tested cells (NaN elsewhere), and the bootstrap result ``[LH, C]``."""
    lift = fx.lift()
    rows = fx.rows_in[:, 0].sum() + fx.rows_out[:, 0].sum()
    expected = fx.exp.sum(0) / max(rows, 1.0)
    p2 = lift.p_value
    p1 = np.where(lift.estimate > 1.0, p2 / 2.0, 1.0 - p2 / 2.0)
    tested = (expected >= min_expected) & np.isfinite(lift.estimate)
    p1 = np.where(tested, p1, np.nan)
    return p1, bh_qvalues(p1), lift


def axis_values(scores: HeadScores, min_expected: float = 0.002) -> list[dict]:
    """Per head: the two axes' raw values, the TransformerLens previous-token score, BOS mass and the largest lift."""
    _, _, lift = _lift_tests(scores.effects, min_expected)
    fx = scores.effects
    rows = fx.rows_in[:, 0].sum() + fx.rows_out[:, 0].sum()
    expected = fx.exp.sum(0) / max(rows, 1.0)
    out = []
    for x, rec in enumerate(scores.heads.records):
        ok = (expected[x] >= min_expected) & np.isfinite(lift.estimate[x])
        pr2 = float(fx.position_r2.reshape(-1)[x])
        out.append({"layer": rec.layer, "head": rec.head, "positional_r2": None if np.isnan(pr2) else pr2,
                    "profile_r2": rec.positional_r2,
                    "content_js": rec.content_js, "tl_previous_token": rec.tl_previous_token,
                    "bos_mass": rec.bos_mass, "max_lift": float(lift.estimate[x][ok].max()) if ok.any() else None})
    return out


def label_heads(scores: HeadScores, thresholds: AxisThresholds | None = None) -> list[dict]:
    """Label every head (module docstring) and keep the evidence against each null."""
    thr = thresholds if thresholds is not None else default_thresholds()
    if any(np.isnan(v) for v in (thr.positional_min_r2, thr.content_min_js, thr.min_lift)):
        from tinyinterp.errors import ConfigError

        raise ConfigError("AxisThresholds has NaN thresholds; derive them with python -m tinyinterp.analysis.heads.nulls")
    p1, q, lift = _lift_tests(scores.effects, thr.min_category_expected)
    out = []
    for x, (v, rec) in enumerate(zip(axis_values(scores, thr.min_category_expected), scores.heads.records)):
        r2, js, prev = v["positional_r2"], v["content_js"], v["tl_previous_token"]
        pos_pass = bool((r2 is not None and r2 >= thr.positional_min_r2) or (prev is not None and prev >= thr.previous_token_min))
        cats = []
        for c, name in enumerate(KEY_CATEGORIES):
            if np.isfinite(q[x, c]):
                cats.append({"category": name, "lift": float(lift.estimate[x, c]), "ci_low": float(lift.ci_low[x, c]),
                             "ci_high": float(lift.ci_high[x, c]), "p": float(p1[x, c]), "q": float(q[x, c]),
                             "pass": bool(q[x, c] <= thr.fdr and lift.estimate[x, c] >= thr.min_lift)})
        cats.sort(key=lambda d: (not d["pass"], -d["lift"]))
        js_pass = js is not None and js >= thr.content_min_js
        content_pass = bool(js_pass and any(c["pass"] for c in cats))
        sink = bool(v["bos_mass"] >= thr.sink_min_bos)
        attrs = [a for a, ok in zip(ATTRIBUTES, (pos_pass, content_pass, sink)) if ok]
        out.append({**v, "label": "+".join(attrs) if attrs else "mixed",
                    "positional": {"r2": r2, "tl_previous_token": prev, "min_r2": thr.positional_min_r2,
                                   "previous_token_min": thr.previous_token_min, "pass": pos_pass},
                    "content": {"js": js, "min_js": thr.content_min_js, "js_pass": bool(js_pass),
                                "min_lift": thr.min_lift, "fdr": thr.fdr, "pass": content_pass, "categories": cats[:5]},
                    "sink": {"bos_mass": v["bos_mass"], "min_bos": thr.sink_min_bos, "pass": sink},
                    "offset_profile": rec.offset_profile[:16]})
    return out


def label_agreement_halves(model, corpus: TaggedCorpus, thresholds: AxisThresholds | None = None, seed: int = 0,
                           progress: bool = False) -> dict:
    """Labels computed separately on two disjoint halves of the stories; share of heads whose labels agree."""
    a, b = corpus.split_indices(seed)
    la = [r["label"] for r in label_heads(score_heads(model, corpus.subset(a), progress=progress), thresholds)]
    lb = [r["label"] for r in label_heads(score_heads(model, corpus.subset(b), progress=progress), thresholds)]
    agree = [x == y for x, y in zip(la, lb)]
    H = model.cfg.n_heads
    return {"agreement": float(np.mean(agree)), "n_heads": len(agree), "n_agree": int(sum(agree)),
            "stories": [int(len(a)), int(len(b))], "seed": seed,
            "disagreements": [{"layer": i // H, "head": i % H, "half_a": x, "half_b": y}
                              for i, (x, y) in enumerate(zip(la, lb)) if x != y]}


def default_thresholds() -> AxisThresholds:
    """The thresholds fixed in :data:`THRESHOLDS` (see ``docs/head_thresholds.json``)."""
    return THRESHOLDS


THRESHOLDS = AxisThresholds()
