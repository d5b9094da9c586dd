"""Head labels from two continuous axes, each against a null; no rule order.

>>> heads = classify_heads(model, corpus)                  # doctest: +SKIP
>>> [(r.layer, r.head, r.label, r.axes) for r in heads.records]  # doctest: +SKIP

Every head gets three independent attributes, each decided by its own test; the label lists the
ones that pass, in a fixed order (``local``, ``semantic``, ``sink``), or ``mixed`` when none does:

* **positional axis** — ``positional_r2``: R² of the head's attention rows predicted by its own
  mean attention-by-offset profile (over the uniform row). Passes when it reaches
  :attr:`~tinyinterp.analysis.heads.classify.HeadConfig.positional_min_r2` (the 99th percentile of R² over null heads that have
  no positional component: untrained models and content-only surrogates, :mod:`~tinyinterp.analysis.heads.nulls`), or
  when TransformerLens' previous-token score reaches ``previous_token_min`` = 0.4 (the issue's
  criterion; the nulls' 99th percentile is reported beside it).
* **content axis** — ``content_js``: mean Jensen–Shannon divergence (bits) between a row on the
  real story and on the same story with its tokens shuffled, at least ``content_min_js`` (99th
  percentile over null heads with no content component: untrained models and position-only
  surrogates), **and** evidence of *which* content: some key category attended more than the
  head's offset profile predicts beyond what null heads reach: a one-sided Wald test (story-
  bootstrap standard error, so the test is not limited by the number of resamples) of lift >
  ``min_lift`` (99th percentile of the largest lift of the same null heads), with a
  Benjamini–Hochberg q ≤ ``fdr`` across every head × category test of the model, and the lift
  itself ≥ ``min_lift``. ``HeadConfig.lift_test = "one"`` gives the earlier reading (the test is of
  lift > 1 and only the point estimate must reach ``min_lift``): a head whose lift sits on the
  threshold then flips between disjoint halves of a corpus; docs/analysis.md shows both readings.
* **sink** — ``bos_mass`` ≥ 0.5: most of the attention on the first token. Definitional (a
  majority), not tuned.

A head whose previous-token score reaches 0.4 is therefore ``local`` unless the content axis passes
too, with its evidence (JS, a lift and a corrected test): then it is ``local+semantic``, never
silently ``semantic``. A head passing both axes is ``local+semantic``: its pattern is largely predicted by distance
*and* content moves it measurably toward a category.
"""

from __future__ import annotations

import numpy as np

from tinyinterp.analysis.heads.effects import HeadEffects
from tinyinterp.analysis.heads.results import HeadResults
from tinyinterp.analysis.heads.scores import KEY_CATEGORIES
from tinyinterp.analysis.stats import bh_qvalues

__all__ = ["axis_values", "label_heads"]

ATTRIBUTES = ("local", "semantic", "sink")


def _lift_tests(fx: HeadEffects, min_expected: float, null: float = 1.0) -> tuple[np.ndarray, np.ndarray, object]:
    """One-sided p (lift > ``null``), BH q over the tested cells (NaN elsewhere), and the bootstrap result ``[LH, C]``."""
    lift = fx.lift(null)
    rows = fx.rows_in[:, 0].sum() + fx.rows_out[:, 0].sum()
    expected = fx.exp.sum(0) / max(rows, 1.0)
    p2 = lift.p_value
    p1 = np.where(lift.estimate > null, p2 / 2.0, 1.0 - p2 / 2.0)
    tested = (expected >= min_expected) & np.isfinite(lift.estimate)
    p1 = np.where(tested, p1, np.nan)
    return p1, bh_qvalues(p1), lift


def axis_values(scores: HeadResults, min_expected: float = 0.002) -> list[dict]:
    """Per head: the two axes' raw values, the TransformerLens previous-token score, BOS mass and the largest lift."""
    _, _, lift = _lift_tests(scores.effects, min_expected)
    fx = scores.effects
    rows = fx.rows_in[:, 0].sum() + fx.rows_out[:, 0].sum()
    expected = fx.exp.sum(0) / max(rows, 1.0)
    out = []
    for x, rec in enumerate(scores.records):
        ok = (expected[x] >= min_expected) & np.isfinite(lift.estimate[x])
        pr2 = float(fx.position_r2.reshape(-1)[x])
        out.append({"layer": rec.layer, "head": rec.head, "positional_r2": None if np.isnan(pr2) else pr2,
                    "profile_r2": rec.profile_r2,
                    "content_js": rec.content_js, "tl_previous_token": rec.tl_previous_token,
                    "bos_mass": rec.bos_mass, "max_lift": float(lift.estimate[x][ok].max()) if ok.any() else None})
    return out


def label_heads(scores: HeadResults, config) -> list[dict]:
    """Label every head (module docstring) and keep the evidence against each null.

    ``scores``: scored heads with their ``.effects`` (from :func:`~tinyinterp.analysis.heads.classify.classify_heads`,
    which labels them with this function); ``config``: the :class:`~tinyinterp.analysis.heads.classify.HeadConfig`
    whose thresholds decide.
    """
    thr = config
    null = thr.min_lift if thr.lift_test == "min_lift" else 1.0
    p1, q, lift = _lift_tests(scores.effects, thr.min_category_expected, null)
    out = []
    for x, (v, rec) in enumerate(zip(axis_values(scores, thr.min_category_expected), scores.records)):
        r2, js, prev = v["positional_r2"], v["content_js"], v["tl_previous_token"]
        pos_pass = bool((r2 is not None and r2 >= thr.positional_min_r2) or (prev is not None and prev >= thr.previous_token_min))
        cats = []
        for c, name in enumerate(KEY_CATEGORIES):
            if np.isfinite(q[x, c]):
                cats.append({"category": name, "lift": float(lift.estimate[x, c]), "ci_low": float(lift.ci_low[x, c]),
                             "ci_high": float(lift.ci_high[x, c]), "p": float(p1[x, c]), "q": float(q[x, c]), "null": null,
                             "pass": bool(q[x, c] <= thr.fdr and lift.estimate[x, c] >= thr.min_lift)})
        cats.sort(key=lambda d: (not d["pass"], -d["lift"]))
        js_pass = js is not None and js >= thr.content_min_js
        content_pass = bool(js_pass and any(c["pass"] for c in cats))
        sink = bool(v["bos_mass"] >= thr.sink_min_bos)
        attrs = [a for a, ok in zip(ATTRIBUTES, (pos_pass, content_pass, sink)) if ok]
        best = cats[0] if cats else None
        reason = "; ".join([
            f"positional: R² {_f(r2, '.2f')} vs {thr.positional_min_r2}, previous-token {_f(prev, '.2f')} vs "
            f"{thr.previous_token_min} -> {'pass' if pos_pass else 'fail'}",
            f"content: JS {_f(js, '.3f')} vs {thr.content_min_js}" + (
                f", {best['category']} lift {best['lift']:.2f} (q {best['q']:.3g}) vs {thr.min_lift}" if best else "")
            + f" -> {'pass' if content_pass else 'fail'}",
            f"sink: BOS {v['bos_mass']:.2f} vs {thr.sink_min_bos} -> {'pass' if sink else 'fail'}"])
        out.append({**v, "label": "+".join(attrs) if attrs else "mixed", "reason": reason,
                    "positional": {"r2": r2, "tl_previous_token": prev, "min_r2": thr.positional_min_r2,
                                   "previous_token_min": thr.previous_token_min, "pass": pos_pass},
                    "content": {"js": js, "min_js": thr.content_min_js, "js_pass": bool(js_pass),
                                "min_lift": thr.min_lift, "fdr": thr.fdr, "lift_test": thr.lift_test, "pass": content_pass, "categories": cats[:5]},
                    "sink": {"bos_mass": v["bos_mass"], "min_bos": thr.sink_min_bos, "pass": sink},
                    "offset_profile": rec.offset_profile[:16]})
    return out


def _f(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)
