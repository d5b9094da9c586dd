"""The paper's head claim as a measured result, per-layer views, and one JSON summary of the head analysis.

Eldan & Li (2023): local heads (attend by distance) help generate function words ("the", "a");
semantic heads (attend by content) help generate entities ("Lucy", "banana"). :func:`paper_claim`
tests both halves on a model: for the heads labelled ``local`` and those labelled ``semantic``
(:mod:`~tinyinterp.analysis.heads.axes`; ``local+semantic`` heads belong to neither set and are reported apart) it
measures, per head and per predicted token,

* the mean direct logit attribution (and, when run, the mean- and resample-ablation loss change)
  on next tokens that are function words, content words and names;
* ``function_minus_content``: the per-token effect on function words minus that on content
  words (a story-bootstrap CI from the same resamples);
* ``function_share``: the share ``F / (F + C)`` of the set's summed effect on function and
  content words (meaningful when both sums are positive).

The claim **holds** when local heads' ``function_minus_content`` is > 0 and semantic heads' is < 0,
both with 95% CIs excluding 0, and semantic heads' per-token effect on names exceeds local heads'
(CI of the difference excluding 0). Anything else is reported as not holding, with the numbers.
"""

from __future__ import annotations

import numpy as np

from tinyinterp.analysis.heads.effects import NEXT_GROUPS, HeadEffects
from tinyinterp.analysis.stats import bootstrap_contrast, bootstrap_mean, bootstrap_ratio, story_weights

__all__ = ["paper_claim", "per_layer", "effect_rows", "label_agreement_halves", "analyse_heads"]

_G = {g: i for i, g in enumerate(NEXT_GROUPS)}


def _sums(fx: HeadEffects, kind: str) -> tuple[np.ndarray, np.ndarray]:
    return (fx.dla, fx.n_next) if kind == "dla" else (fx.ablation[kind], fx.ablation["n"])


def _r(res, i=()) -> dict:
    return {k: (None if not np.isfinite(v) else v) for k, v in res.row(i).items()}


def _set_effect(fx: HeadEffects, heads: list[int], kind: str, w: np.ndarray) -> dict:
    """Per-head, per-token effect of a head set on FUNCTION / CONTENT / NAME next tokens, and the contrast."""
    sums, n = _sums(fx, kind)
    S = sums[:, heads].sum(1) / len(heads)  # [stories, G]: mean over the set's heads
    out = {g: _r(bootstrap_mean(S[:, _G[g]], n[:, _G[g]], w)) for g in ("FUNCTION", "CONTENT", "NAME", "DET", "ALL")}
    out["function_minus_content"] = _r(bootstrap_contrast(S[:, _G["FUNCTION"]], n[:, _G["FUNCTION"]],
                                                          S[:, _G["CONTENT"]], n[:, _G["CONTENT"]], w))
    out["function_share"] = _r(bootstrap_ratio(S[:, _G["FUNCTION"]], S[:, _G["FUNCTION"]] + S[:, _G["CONTENT"]], w, null=0.5))
    return out


def _name_gap(fx: HeadEffects, sem: list[int], loc: list[int], kind: str, w: np.ndarray) -> dict:
    """Semantic minus local heads' per-head, per-token effect on names (same resamples)."""
    sums, n = _sums(fx, kind)
    g = _G["NAME"]
    a, b = sums[:, sem, g].sum(1) / len(sem), sums[:, loc, g].sum(1) / len(loc)
    return _r(bootstrap_contrast(a, n[:, g], b, n[:, g], w))


def _excludes_zero(d: dict, sign: int) -> bool:
    lo, hi = d["ci_low"], d["ci_high"]
    return lo is not None and hi is not None and (lo > 0 if sign > 0 else hi < 0)


def paper_claim(fx: HeadEffects, labels: list[str]) -> dict:
    """The ``paper_claim`` block of ``summary.json`` (module docstring). ``labels``: one per head, layer-major."""
    loc = [i for i, lab in enumerate(labels) if lab == "local"]
    sem = [i for i, lab in enumerate(labels) if lab == "semantic"]
    both = [i for i, lab in enumerate(labels) if lab == "local+semantic"]
    H = fx.n_heads
    name = lambda ids: [f"L{i // H}H{i % H}" for i in ids]  # noqa: E731
    out: dict = {"local_heads": name(loc), "semantic_heads": name(sem), "local+semantic_heads": name(both),
                 "measures": {}, "n_boot": fx.n_boot}
    kinds = ["dla"] + [k for k in ("mean", "resample") if k in fx.ablation]
    for kind in kinds:
        w = story_weights(_sums(fx, kind)[0].shape[0], fx.n_boot, fx.seed)
        block = {}
        if loc:
            block["local"] = _set_effect(fx, loc, kind, w)
        if sem:
            block["semantic"] = _set_effect(fx, sem, kind, w)
        if both:
            block["local+semantic"] = _set_effect(fx, both, kind, w)
        if loc and sem:
            block["name_semantic_minus_local"] = _name_gap(fx, sem, loc, kind, w)
        out["measures"][kind] = block
    out["holds"], out["statement"] = _verdict(out, bool(loc), bool(sem))
    return out


def _verdict(out: dict, has_loc: bool, has_sem: bool) -> tuple[bool | None, str]:
    if not (has_loc and has_sem):
        missing = " and ".join(x for x, ok in (("local", has_loc), ("semantic", has_sem)) if not ok)
        return None, (f"Not testable on this model: no head is labelled {missing} (see the per-layer view and each "
                      f"head's axes for why).")
    parts, ok_all = [], True
    for kind, block in out["measures"].items():
        lf, sf, gap = block["local"]["function_minus_content"], block["semantic"]["function_minus_content"], \
            block["name_semantic_minus_local"]
        ok = _excludes_zero(lf, +1) and _excludes_zero(sf, -1) and _excludes_zero(gap, +1)
        ok_all &= ok
        fmt = lambda d: f"{d['estimate']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"  # noqa: E731
        parts.append(f"{kind}: local function-minus-content {fmt(lf)}, semantic {fmt(sf)}, "
                     f"names semantic-minus-local {fmt(gap)} -> {'consistent' if ok else 'not consistent'}")
    verdict = "The claim holds on this model" if ok_all else "The claim does not hold on this model"
    return ok_all, verdict + " (per head, per predicted token; 95% story-bootstrap CIs): " + "; ".join(parts) + "."


def per_layer(rows: list[dict], fx: HeadEffects) -> list[dict]:
    """Per layer: label counts, the largest positional R² / previous-token score / content JS, and each head's
    most-attended offset (why a layer has or lacks local heads)."""
    H = fx.n_heads
    out = []
    for layer in range(fx.n_layers):
        rs = [r for r in rows if r["layer"] == layer]
        labels: dict[str, int] = {}
        for r in rs:
            labels[r["label"]] = labels.get(r["label"], 0) + 1
        best = lambda k: max((r[k] for r in rs if r[k] is not None), default=None)  # noqa: E731
        out.append({"layer": layer, "labels": labels, "max_positional_r2": best("positional_r2"),
                    "max_tl_previous_token": best("tl_previous_token"), "max_content_js": best("content_js"),
                    "peak_offset": {f"H{r['head']}": int(np.argmax(r["offset_profile"])) if r["offset_profile"] else None
                                    for r in rs},
                    "peak_offset_mass": {f"H{r['head']}": float(max(r["offset_profile"])) if r["offset_profile"] else None
                                         for r in rs}})
    assert len(out) * H == len(rows)
    return out


def effect_rows(fx: HeadEffects, groups: tuple[str, ...] = ("FUNCTION", "CONTENT", "NAME", "DET", "NOUN", "VERB",
                                                             "ADJ", "PRON", "ADP", "PUNCT", "ALL")) -> list[dict]:
    """Per head: output effects by next-token group (estimate and CI) for dla / mean / resample, copying, attention-next."""
    kinds = ["dla"] + [k for k in ("mean", "resample") if k in fx.ablation]
    res = {k: fx.per_token(k) for k in kinds}
    an = fx.attn_next()
    from tinyinterp.analysis.heads.scores import KEY_CATEGORIES

    cats = [c for c in ("NAME", "NOUN", "VERB", "ADJ", "DET", "PRON") if c in KEY_CATEGORIES]
    out = []
    for x in range(fx.n_layers * fx.n_heads):
        l, h = divmod(x, fx.n_heads)
        row = {"layer": l, "head": h, "effects": {k: {g: _r(r, (x, _G[g])) for g in groups} for k, r in res.items()},
               "attention_next": {c: _r(an, (x, KEY_CATEGORIES.index(c))) for c in cats}}
        row["copying"] = {k: float(v[l, h]) for k, v in fx.copying.items()}
        out.append(row)
    return out



def label_agreement_halves(model, corpus, config=None, seed: int = 0, progress: bool = False) -> dict:
    """Labels computed separately on two disjoint halves of the stories (each its own calibration and pass,
    without the output effects); share of heads whose labels agree. ``other_reading``: the same halves
    labelled with the other ``HeadConfig.lift_test`` (docs/analysis.md shows both)."""
    import dataclasses

    from tinyinterp.analysis.heads.axes import label_heads
    from tinyinterp.analysis.heads.classify import HeadConfig, classify_heads

    cfg = dataclasses.replace(config if config is not None else HeadConfig(), output_effects=False, progress=progress)
    other = dataclasses.replace(cfg, lift_test="one" if cfg.lift_test == "min_lift" else "min_lift")
    a, b = corpus.split_indices(seed)
    ra, rb = classify_heads(model, corpus.subset(a), cfg), classify_heads(model, corpus.subset(b), cfg)
    out = _agreement([r.label for r in ra.records], [r.label for r in rb.records], model.cfg.n_heads)
    out.update({"stories": [int(len(a)), int(len(b))], "seed": seed, "lift_test": cfg.lift_test})
    out["other_reading"] = {"lift_test": other.lift_test, **_agreement(
        [r["label"] for r in label_heads(ra, other)], [r["label"] for r in label_heads(rb, other)], model.cfg.n_heads)}
    return out


def _agreement(la: list[str], lb: list[str], H: int) -> dict:
    agree = [x == y for x, y in zip(la, lb)]
    return {"agreement": float(np.mean(agree)), "n_heads": len(agree), "n_agree": int(sum(agree)),
            "disagreements": [{"layer": i // H, "head": i % H, "half_a": x, "half_b": y}
                              for i, (x, y) in enumerate(zip(la, lb)) if x != y]}


def analyse_heads(model, corpus, heads=None, config=None, ablation_stories: int | None = 200, halves: bool = True,
                  progress: bool = False) -> dict:
    """Everything the head analysis reports: per-head axes, labels, effects; paper claim; halves; per layer; cost.

    ``heads``: :class:`~tinyinterp.analysis.heads.results.HeadResults` with their output effects, e.g. from the
    shared pass of ``tinyinterp analyze``; None scores them here (one pass). The mean/resample ablations
    (``ablation_stories`` stories, 0: none) and the halves check are extra passes, timed apart in ``cost``.
    """
    import time

    import torch

    from tinyinterp.analysis.heads.ablation import ablation_effects
    from tinyinterp.analysis.heads.classify import HeadConfig, classify_heads

    cfg = config if config is not None else HeadConfig(progress=progress)
    cost = {}
    if heads is None:
        t0 = time.perf_counter()
        heads = classify_heads(model, corpus, cfg)
        cost["heads_pass_s"] = time.perf_counter() - t0
    fx = heads.effects
    if fx is None or not fx.meta.get("output_effects", True):
        from tinyinterp.errors import ConfigError

        raise ConfigError("these head results carry no output effects; score them with HeadConfig(output_effects=True)")
    t0 = time.perf_counter()
    if ablation_stories != 0:
        keep = np.nonzero(np.minimum(corpus.lengths(), model.cfg.n_ctx) >= 2)[0]
        n_ab = len(keep) if ablation_stories is None else min(ablation_stories, len(keep))
        sel = np.sort(np.random.default_rng(0).choice(keep, n_ab, replace=False))
        full = ablation_effects(model, corpus, sel, torch.as_tensor(fx.mean_z), progress=progress)
        fx.ablation = {k: v[sel] for k, v in full.items()}
    cost["ablation_s"] = time.perf_counter() - t0
    cost["ablation_stories"] = int(fx.ablation["n"].shape[0]) if fx.ablation else 0
    rows = [dict(r) for r in heads.axes]
    labels = [r["label"] for r in rows]
    for r, e in zip(rows, effect_rows(fx)):
        r.update({k: v for k, v in e.items() if k not in ("layer", "head")})
    thr = ("positional_min_r2", "previous_token_min", "content_min_js", "min_lift", "fdr", "sink_min_bos",
           "min_category_expected")
    summary = {"paper_claim": paper_claim(fx, labels), "per_layer": per_layer(rows, fx),
               "labels": {lab: labels.count(lab) for lab in sorted(set(labels))},
               "thresholds": {k: getattr(cfg, k) for k in thr}, "cost": cost,
               "n_stories": fx.meta["n_stories"], "n_boot": fx.n_boot}
    if halves:
        t0 = time.perf_counter()
        summary["label_agreement_halves"] = label_agreement_halves(model, corpus, cfg, progress=progress)
        cost["halves_s"] = time.perf_counter() - t0
    return {"heads": rows, "summary": summary}


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json
    import logging
    from pathlib import Path

    ap = argparse.ArgumentParser(description="Head axes, labels, output effects and the paper claim (phase-1 runner).")
    ap.add_argument("checkpoint")
    ap.add_argument("--corpus", nargs="+", required=True)
    ap.add_argument("--max-stories", type=int, default=300)
    ap.add_argument("--ablation-stories", type=int, default=200)
    ap.add_argument("--no-halves", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from tinyinterp import load_corpus, load_model
    from tinyinterp.analysis.results_io import jsonable
    from tinyinterp.atomic import atomic_path

    logging.basicConfig(level=logging.INFO)
    model = load_model(args.checkpoint)
    corpus = load_corpus(args.corpus, model, max_stories=args.max_stories)
    res = analyse_heads(model, corpus, ablation_stories=args.ablation_stories, halves=not args.no_halves, progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, obj in (("heads_axes.json", res["heads"]), ("heads_summary.json", res["summary"])):
        with atomic_path(out / name) as tmp:
            tmp.write_text(json.dumps(jsonable(obj), indent=1))
    print(json.dumps({k: res["summary"][k] for k in ("labels", "cost")}, indent=1))
    print(res["summary"]["paper_claim"]["statement"])
    if "label_agreement_halves" in res["summary"]:
        print("label_agreement_halves", res["summary"]["label_agreement_halves"]["agreement"])


if __name__ == "__main__":
    main()
