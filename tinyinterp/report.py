"""Self-contained ``report.html`` for an analysis folder (plotly JS inlined once; opens offline)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from tinyinterp import plots
from tinyinterp.atomic import write_text

# The paper's illustrative prompt (Eldan & Li 2023, section on interpretability).
DEMO_PROMPT = "One day, Lucy asks Tom: \"I am looking for a banana but I can't find it\". Tom says: \"Don't worry, I will help you\"."
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l{text-align:left}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}
.note{color:#555;font-size:0.9em}.ex{font-family:ui-monospace,monospace;font-size:0.85em;white-space:pre-wrap}
"""


class _Figs:
    """Renders figures; the first one carries plotly.js inline, the rest reuse it."""

    def __init__(self):
        self.first = True

    def __call__(self, fig) -> str:
        out = fig.to_html(full_html=False, include_plotlyjs=True if self.first else False)
        self.first = False
        return out


def _table(df: pd.DataFrame, cols: list[str], left: tuple[str, ...] = ()) -> str:
    cols = [c for c in cols if c in df]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            txt = f"{v:.3g}" if isinstance(v, float) else html.escape(str(v))
            cells.append(f'<td class="l">{txt}</td>' if c in left else f"<td>{txt}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _heads_section(heads, model, fig) -> list[str]:
    df = heads.to_frame()
    parts = ["<h2>Attention heads</h2>",
             "<p class='note'>Label: every axis that passes its null-derived threshold, joined by '+' (no rule "
             "order): local (held-out R² of a position-only surrogate, or TransformerLens previous-token score ≥ 0.4), "
             "semantic (content JS real vs shuffled tokens and a key category with lift above the null, BH q ≤ 0.05), "
             "sink (BOS mass ≥ 0.5); mixed when none passes. Thresholds and where each came from: "
             "<code>HeadConfig</code>, docs/analysis.md; the values used are in <code>heads_meta.json</code>. "
             "<code>pattern_label</code> is the older pattern-only rule, kept for comparison.</p>",
             fig(plots.plot_head_grid(df))]
    if {"positional_r2", "content_js"} <= set(df.columns):
        parts.append(fig(plots.plot_head_scatter(df, "positional_r2", "content_js")))
    cols = ["layer", "head", "label", "positional_r2", "content_js", "tl_previous_token", "mean_distance", "prev_token",
            "bos_mass", "top_category", "pattern_label", "reason"]
    parts.append(_table(df, [c for c in cols if c in df.columns], left=("label", "top_category", "pattern_label", "reason")))
    if model is not None:
        for lab in ("local", "semantic"):
            sub = df[df["label"] == lab]
            if sub.empty:
                continue
            r = sub.iloc[0]
            L, H = int(r["layer"]), int(r["head"])
            parts.append(f"<h3>Example {lab} head: L{L}H{H}</h3>")
            parts.append(fig(plots.plot_offset_profile(heads[L, H].offset_profile, L, H)))
            parts.append(fig(plots.plot_attention(model, DEMO_PROMPT, L, H)))
    return parts


def _neurons_section(neurons, model, fig) -> list[str]:
    s = neurons.summary
    ctrl = s.get("untrained_control") or {}
    paper = s.get("paper_specificity") or {}
    parts = ["<h2>Neurons: part of speech beyond token identity</h2>",
             "<p class='note'>A neuron × tag is tested when the selection half selects it (AUROC ≥ "
             f"{s.get('auroc_threshold')} on one token-id fold); every other number is measured on the held-out half. "
             "<b>pos</b>: replicated (AUROC ≥ threshold, story-bootstrap p with BH q &lt; "
             f"{s.get('fdr')}), generalises to token ids unseen when selecting, tells ambiguous words apart within one "
             "token id (story-bootstrap CI above 0.5, BH) and spans enough word types among its top activations; "
             "<b>token</b>: replicated but one of those identity tests fails; <b>untestable</b>: a deciding test lacks "
             "support (or, in a streaming run, cannot run). Sensitivity (AUROC) and specificity (top-k precision, AP "
             "lift over the base rate) side by side; the token-id lookup and the embedding use no MLP at all "
             "(docs/analysis.md has the rules).</p>",
             f"<p>Mode: <b>{html.escape(str(s.get('mode')))}</b>. Neurons with a <b>pos</b> row: "
             f"<b>{s.get('n_pos_neurons', 0)}</b>, with a <b>token</b> row: {s.get('n_token_neurons', 0)}, "
             f"untestable: {s.get('n_untestable_neurons', 0)} (of {s.get('n_neurons')}); untrained control: "
             f"<b>{ctrl.get('n_pos_neurons', 'not run')}</b> pos, {ctrl.get('n_token_neurons', '-')} token.</p>"]
    if s.get("untestable_why"):
        parts.append(f"<p class='note'>Untestable here: {html.escape(s['untestable_why'])}.</p>")
    if paper:
        parts.append(f"<p>Paper-form specificity ({html.escape(paper.get('rule', ''))}): "
                     f"<b>{paper.get('n_units', 0)}</b> neuron(s).</p>")
    parts.append(_table(neurons.tag_table(), list(neurons.tag_table().columns), left=("tag",)))
    df = neurons.display_frame()
    if df.empty:
        return parts
    shown = df[df["category"] != "none"].groupby("tag").head(5)
    parts.append(_table(shown, [c for c in df.columns if c not in ("layer", "neuron_index")],
                        left=("neuron", "tag", "category", "reasons", "AUROC CI", "ambiguous CI", "ambiguous n")))
    for tag in ("NOUN", "VERB", "ADJ", "PROPN"):
        top = neurons.top_neurons(tag, n=1)
        if not top:
            continue
        L, N = top[0]
        parts.append(f"<h3>Best {tag} row: L{L}N{N}</h3>")
        parts.append(fig(plots.plot_neuron_selectivity(neurons.to_frame(), L, N)))
        if model is not None:
            toks, acts = plots.neuron_activations(model, DEMO_PROMPT, L, N)
            parts.append(f"<p class='ex'>{plots.text_activation_html(toks, acts)}</p>")
        for ex in neurons.examples.get(f"{L}.{N}", [])[:3]:
            if "text" in ex:
                parts.append(f"<p class='ex'>{plots.text_activation_html(ex['text'], ex['acts'])}</p>")
    return parts


def _ablation_section(ablations: list[dict[str, Any]]) -> list[str]:
    if not ablations:
        return []

    def ci(v) -> str:
        return f"[{v[0]:.3g}, {v[1]:.3g}]"

    rows = [{"tag": a["tag"], "neurons": ", ".join(a["units"]), "target Δloss": a["delta_target"],
             "CI": ci(a["delta_target_ci"]), "off-target Δloss": a["delta_off_target"], "CI ": ci(a["delta_off_target_ci"]),
             "ratio": a["ratio"], "ratio CI": ci(a["ratio_ci"]), "matched random target (mean)": a["random_delta_target_mean"],
             "matched random ratio (mean)": a.get("random_ratio_mean"), "random sets": a.get("n_random"),
             "p (target)": a["p_random"], "q (target, BH)": a.get("q_random"), "significant": a.get("significant"),
             "p (ratio)": a["p_random_ratio"], "q (ratio, BH)": a.get("q_random_ratio")} for a in ablations]
    return ["<h2>Ablation: each tag's top neurons vs matched random sets</h2>",
            "<p class='note'>Neurons chosen by selection-half AUROC, mean-ablated (selection-half means) on held-out "
            "stories. Target: next-token loss after the last token of a word with the tag; off-target: every other "
            "position; ratio = target / off-target (specificity). Random sets are matched neuron by neuron on "
            "activation variance and output-weight norm in the same layer. CIs: story bootstrap. p = (1 + random sets "
            "reaching the chosen set's target change) / (1 + random sets); q: Benjamini-Hochberg across the tags of "
            "this table; significant: q <= 0.05 (the smallest p is 1 / (1 + random sets)).</p>",
            _table(pd.DataFrame(rows), list(rows[0]), left=("tag", "neurons", "CI", "CI ", "ratio CI"))]


def _claim_table(claim: dict) -> list[str]:
    """Per measure and head set: per-token effect on function / content words / names and the contrast, with CIs."""
    ci = lambda d: "–" if not d or d.get("estimate") is None else (  # noqa: E731
        f"{d['estimate']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d.get("ci_low") is not None else f"{d['estimate']:+.3f}")
    rows = [{"measure": kind, "heads": who, "function words": ci(b.get("FUNCTION")), "content words": ci(b.get("CONTENT")),
             "names": ci(b.get("NAME")), "function − content": ci(b.get("function_minus_content")),
             "function share": ci(b.get("function_share"))}
            for kind, block in claim.get("measures", {}).items() for who, b in block.items() if isinstance(b, dict) and "FUNCTION" in b]
    if not rows:
        return []
    return ["<p class='note'>Per head and per predicted token (dla: logit; mean/resample: loss increase when ablated, "
            "nats), 95% story-bootstrap CIs.</p>", _table(pd.DataFrame(rows), list(rows[0]), left=("measure", "heads"))]


def _head_effects_section(out: Path, summary: dict, fig) -> list[str]:
    """Labels from the two axes vs their nulls, output effects by next-token group, the paper claim."""
    import json

    path = out / "heads_axes.json"
    if not path.exists():
        return []
    rows = json.loads(path.read_text(encoding="utf-8"))
    claim = summary.get("paper_claim", {})
    halves = summary.get("label_agreement_halves")
    parts = ["<h2>What each head produces, and labels from two axes</h2>",
             "<p class='note'>Each head is tested on two axes, each against null heads (untrained models of the same "
             "shape, position-only and content-only surrogates; thresholds = their 99th percentiles, fixed before the "
             "bundled models were labelled, see docs/analysis.md): positional (held-out R² of a position-only "
             "surrogate, or TransformerLens previous-token score ≥ 0.4) and content (JS real vs shuffled tokens, plus a "
             "key category with lift above the null and BH q ≤ 0.05). The label lists every axis that passes.</p>",
             f"<p>Labels: {html.escape(', '.join(f'{k} {v}' for k, v in summary.get('head_axes', {}).get('labels', {}).items()))}"
             + (f"; agreement between two disjoint halves of the stories: {halves['n_agree']}/{halves['n_heads']}"
                if halves else "") + "</p>",
             f"<p><b>Paper claim.</b> {html.escape(str(claim.get('statement', 'not computed')))}</p>",
             fig(plots.plot_head_axes(rows))]
    parts += _claim_table(claim)
    kinds = [k for k in ("dla", "mean") if k in rows[0].get("effects", {})]
    for layer in sorted({r["layer"] for r in rows}):  # the per-layer view, with 95% story-bootstrap CIs
        parts += [fig(plots.plot_head_effects(rows, layer=layer, kind=k)) for k in kinds]
    df = pd.DataFrame([{"layer": r["layer"], "head": r["head"], "label": r["label"], "positional R²": r["positional"]["r2"],
                        "prev-token": r["positional"]["tl_previous_token"], "content JS": r["content"]["js"],
                        "top category": (r["content"]["categories"] or [{}])[0].get("category", ""),
                        "DLA function": r["effects"]["dla"]["FUNCTION"]["estimate"],
                        "DLA content": r["effects"]["dla"]["CONTENT"]["estimate"],
                        "DLA name": r["effects"]["dla"]["NAME"]["estimate"],
                        "OV copying": r["copying"].get("eigen")} for r in rows])
    parts.append(_table(df, list(df.columns), left=("label", "top category")))
    return parts


def _features_section(out: Path) -> list[str]:
    """SAE features vs neurons per tag (``features_summary.json``, from ``analyze --features``)."""
    from tinyinterp.analysis.features.results import FeatureResults

    if not FeatureResults.exists(out):
        return []
    res = FeatureResults.load(out)
    parts = ["<h2>Sparse-autoencoder features vs neurons</h2>",
             "<p class='note'>Each SAE's features go through the neuron rules above (same tokens, halves, lookup baseline, "
             "story-bootstrap CIs). Per tag, the neuron and the feature with the best selection-half AUROC, measured on the "
             "held-out half: AUROC, within-token-id AUROC on ambiguous words, precision of the top-50 activations for the "
             "tag, word types with the tag among them, category (none = not a candidate or not replicated). Ablation sets "
             "the tag's top features to their means through the SAE (error term kept) on held-out stories, against "
             "random features matched on variance and decoder norm; p = (1 + random sets reaching the chosen set) / "
             "(1 + random sets), q: Benjamini-Hochberg across the ablated tags, significant: q <= 0.05 "
             "(features.json, features_summary.json).</p>"]
    for s in res.saes:
        parts.append(f"<h3>{html.escape(str(s['name']))} ({s['n_live']} live of {s['d_sae']} features)</h3>")
        if s.get("comparison"):
            parts.append(_table(pd.DataFrame(s["comparison"]), list(s["comparison"][0]),
                                left=("tag", "neuron_unit", "feature_unit", "neuron_category", "feature_category")))
        if s.get("ablation"):
            df = pd.DataFrame([{k: a.get(k) for k in ("tag", "units", "delta_target", "delta_off_target", "ratio",
                                                  "random_delta_target_mean", "n_random", "p_random", "q_random",
                                                  "significant")} for a in s["ablation"]])
            df["units"] = df["units"].map(", ".join)
            parts.append(_table(df, list(df.columns), left=("tag", "units")))
    return parts


def write_report(out: str | Path, model=None, heads=None, neurons=None, probes=None, summary: dict | None = None) -> Path:
    """Write ``out/report.html`` from analysis results (and the model, for attention plots)."""
    out = Path(out)
    fig = _Figs()
    summary = summary or {}
    title = f"tinyinterp analysis: {html.escape(str(summary.get('model', 'model')))}"
    c = summary.get("corpus", {})
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style></head><body>",
             f"<h1>{title}</h1>",
             f"<p>{summary.get('n_layers', '?')} layers × {summary.get('n_heads', '?')} heads, d_mlp {summary.get('d_mlp', '?')}. "
             f"Corpus: {c.get('stories', '?')} stories, {c.get('tokens', '?')} tokens, tagged with {html.escape(str(c.get('spacy_model', '')))} "
             f"(alignment coverage {c.get('alignment_coverage', float('nan')):.3f}).</p>"]
    if "heads" in summary:
        parts.append("<p>Head labels: " + ", ".join(f"{k} {v}" for k, v in summary["heads"].items()) + "</p>")
    if heads is not None:
        parts += _heads_section(heads, model, fig)
    parts += _head_effects_section(out, summary, fig)
    if neurons is not None:
        parts += _neurons_section(neurons, model, fig)
    parts += _ablation_section(summary.get("ablation", []))
    parts += _features_section(out)
    if probes is not None and probes.rows:
        parts += ["<h2>Linear probes for UPOS</h2>",
                  "<p class='note'>Held-out accuracy per site and the Hewitt & Liang control task (each word type "
                  "gets a random tag). Lexical baselines (no context): token-id lookup accuracy "
                  f"{probes.summary.get('token_lookup_accuracy', float('nan')):.3f}, embedding probe "
                  f"{probes.summary.get('embedding_probe_accuracy') or float('nan'):.3f}. A site is credited with a tag "
                  "<i>beyond identity</i> only where its probe beats the lookup on ambiguous words (within one token id) "
                  "or the lookup and the embedding on token ids unseen in training.</p>",
                  fig(plots.plot_probe_accuracy(probes)),
                  _table(probes.to_frame().assign(beyond_identity=lambda d: d.get("beyond_identity", "").map(
                      lambda v: ", ".join(v) if isinstance(v, list) else "")),
                         ["site", "accuracy", "control_accuracy", "selectivity", "beyond_identity"],
                         left=("site", "beyond_identity"))]
    sparse = summary.get("sparse_probes") or {}
    if sparse:
        df = pd.DataFrame([{"tag": t, "best single neuron AUROC": v["k1_auroc"], "neurons for AUROC 0.9": str(v["k_for_0.9"] or "not reached"),
                            "all neurons AUROC": v["all_neurons_auroc"], "token-id lookup AUROC": v.get("lookup_auroc"),
                            "k beyond identity": ", ".join(map(str, v.get("beyond_identity_ks") or [])) or "none"}
                           for t, v in sparse.items()])
        parts += ["<h2>How many neurons carry a tag (k-sparse probes)</h2>",
                  "<p class='note'>Neurons ranked on one half of the stories, a logistic regression on the top k, "
                  "AUROC on the other half; the full curves are in sparse_probes.json. The token-id lookup uses no model; "
                  "k beyond identity: the k whose probe beats it on ambiguous words or unseen token ids.</p>",
                  _table(df, list(df.columns), left=("tag",))]
    parts.append("</body></html>")
    path = out / "report.html"
    write_text(path, "\n".join(parts))
    return path
