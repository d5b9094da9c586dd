"""Plotly figures for heads, neurons and probes. Every function returns a ``go.Figure``.

The figures only read public results (``HeadResults``/``NeuronResults``/``ProbeResults``
frames) or run the model themselves, so the explorer, the HTML report and notebooks share
them.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

LABEL_COLORS = {"local": "#1f77b4", "semantic": "#d62728", "local+semantic": "#9467bd", "sink": "#7f7f7f",
                "local+sink": "#17becf", "semantic+sink": "#e377c2", "local+semantic+sink": "#8c564b", "mixed": "#ff7f0e"}
"""A colour for every head label (:data:`tinyinterp.analysis.heads.LABELS`)."""


def _frame(x: Any) -> pd.DataFrame:
    return x if isinstance(x, pd.DataFrame) else x.to_frame()


def _run_hook(model, text: str, name: str) -> tuple[list[str], torch.Tensor]:
    """Token strings of ``text`` (BOS first, cut to the context) and one hook's activation (no batch dimension)."""
    from tinyinterp.analysis.engine import run_text

    strs, acts = run_text(model, text, [name])
    return strs, acts[name]


def _tokens_and_pattern(model, text: str, layer: int, head: int) -> tuple[list[str], np.ndarray]:
    strs, pattern = _run_hook(model, text, f"blocks.{layer}.attn.hook_pattern")  # [head, q, k]
    return strs, pattern[head].numpy()


def _check_head(model, layer: int, head: int) -> None:
    from tinyinterp.errors import TinyInterpError

    if not 0 <= layer < model.cfg.n_layers or not 0 <= head < model.cfg.n_heads:
        raise TinyInterpError(f"head L{layer}H{head} does not exist: the model has {model.cfg.n_layers} layers × {model.cfg.n_heads} heads")


def _label(tokens: list[str]) -> list[str]:
    return [f"{i}:{t!r}"[:24] for i, t in enumerate(tokens)]


def plot_attention(model, text: str, layer: int, head: int) -> go.Figure:
    """Heatmap of head ``layer.head`` on ``text`` (queries down, keys across, hover = weight)."""
    _check_head(model, layer, head)
    toks, pat = _tokens_and_pattern(model, text, layer, head)
    labels = _label(toks)
    fig = go.Figure(go.Heatmap(z=pat, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1,
                               hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"Attention of head L{layer}H{head}", xaxis_title="key token", yaxis_title="query token",
                      yaxis_autorange="reversed", height=max(400, 14 * len(toks) + 150), width=max(500, 14 * len(toks) + 250))
    return fig


def plot_head_grid(heads) -> go.Figure:
    """Layer × head grid coloured by label; hover shows the main scores."""
    df = _frame(heads)
    n_layers, n_heads = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    order = list(LABEL_COLORS)
    z = np.full((n_layers, n_heads), np.nan)
    text = [["" for _ in range(n_heads)] for _ in range(n_layers)]
    score_cols = [c for c in ("positional_r2", "content_js", "mean_distance", "prev_token", "bos_mass") if c in df]
    for _, r in df.iterrows():
        z[int(r["layer"]), int(r["head"])] = order.index(r["label"]) if r["label"] in order else len(order)
        text[int(r["layer"])][int(r["head"])] = f"L{int(r['layer'])}H{int(r['head'])}: {r['label']}<br>" + "<br>".join(
            f"{c} {r[c]:.3f}" if pd.notna(r[c]) else f"{c} n/a" for c in score_cols)
    colorscale = []
    for i, lab in enumerate(order):
        colorscale += [[i / len(order), LABEL_COLORS[lab]], [(i + 1) / len(order), LABEL_COLORS[lab]]]
    fig = go.Figure(go.Heatmap(z=z, text=text, hoverinfo="text", colorscale=colorscale, zmin=0, zmax=len(order),
                               showscale=False, xgap=2, ygap=2))
    for lab in order:  # legend entries (the single labels always, combined ones when present)
        if "+" not in lab or lab in set(df["label"]):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", marker=dict(size=12, color=LABEL_COLORS[lab]),
                                     name=lab))
    fig.update_layout(title="Head labels", xaxis_title="head", yaxis_title="layer", yaxis_autorange="reversed",
                      xaxis=dict(dtick=1), yaxis=dict(dtick=1), height=200 + 40 * n_layers)
    return fig


def plot_head_scatter(heads, x: str = "positional_r2", y: str = "content_js") -> go.Figure:
    """Positional fit vs content dependence, one point per head, coloured by label."""
    df = _frame(heads)
    fig = go.Figure()
    for lab, sub in df.groupby("label"):
        fig.add_trace(go.Scatter(x=sub[x], y=sub[y], mode="markers", name=str(lab),
                                 marker=dict(size=10, color=LABEL_COLORS.get(str(lab), "#333")),
                                 text=[f"L{int(a)}H{int(b)}" for a, b in zip(sub["layer"], sub["head"])],
                                 hovertemplate="%{text}<br>" + x + " %{x:.3f}<br>" + y + " %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"{x} vs {y}", xaxis_title=x, yaxis_title=y)
    return fig


def plot_offset_profile(profile: np.ndarray | list[float], layer: int, head: int, max_offset: int = 32) -> go.Figure:
    """Mean attention by query−key offset for one head."""
    p = np.asarray(profile, dtype=float)[: max_offset + 1]
    fig = go.Figure(go.Bar(x=list(range(len(p))), y=p, hovertemplate="offset %{x}<br>mean attention %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"Offset profile of L{layer}H{head}", xaxis_title="query − key offset (0 = itself)",
                      yaxis_title="mean attention")
    return fig


def plot_neuron_selectivity(neurons, layer: int, neuron: int, metric: str = "auroc") -> go.Figure:
    """Held-out ``metric`` of one neuron for every tag it was tested on, coloured by category."""
    df = _frame(neurons)
    sub = df[(df["layer"] == layer) & (df["neuron"] == neuron)].sort_values(metric, ascending=False)
    cat = sub["category"].fillna("none") if "category" in sub else pd.Series(["?"] * len(sub), index=sub.index)
    colours = {"pos": "#2a9d8f", "token": "#e76f51", "untestable": "#8d99ae", "none": "#cccccc"}
    fig = go.Figure(go.Bar(x=sub["tag"], y=sub[metric], marker_color=[colours.get(c, "#999") for c in cat],
                           customdata=np.stack([cat.to_numpy(),
                                                sub.get("q_value", pd.Series([np.nan] * len(sub))).to_numpy()], -1),
                           hovertemplate="%{x}: %{customdata[0]}<br>" + metric
                                         + " %{y:.3f}<br>q %{customdata[1]:.2g}<extra></extra>"))
    fig.update_layout(title=f"Neuron L{layer}N{neuron}: held-out {metric} by tag (colour: category)", xaxis_title="UPOS",
                      yaxis_title=metric)
    return fig


def neuron_activations(model, text: str, layer: int, neuron: int) -> tuple[list[str], np.ndarray]:
    """Tokens of ``text`` and the activation (``mlp.hook_post``) of one neuron on each."""
    strs, post = _run_hook(model, text, f"blocks.{layer}.mlp.hook_post")  # [pos, d_mlp]
    return strs, post[:, neuron].numpy()


def plot_text_activations(tokens: list[str], acts: np.ndarray, title: str = "") -> go.Figure:
    """Tokens laid out as text, coloured by activation (hover shows values)."""
    acts = np.asarray(acts, dtype=float)
    per_row = 16
    xs = [i % per_row for i in range(len(tokens))]
    ys = [i // per_row for i in range(len(tokens))]
    lim = float(np.abs(acts).max() or 1.0)
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=acts, text=[t.replace(" ", "·") for t in tokens], texttemplate="%{text}",
                               colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
                               hovertemplate="%{text}<br>activation %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, yaxis_autorange="reversed", xaxis_visible=False, yaxis_visible=False,
                      height=120 + 34 * (max(ys) + 1 if ys else 1))
    return fig


def text_activation_html(tokens: list[str], acts: np.ndarray) -> str:
    """Inline HTML: each token in a span shaded by its activation (for tables and reports)."""
    acts = np.asarray(acts, dtype=float)
    lim = float(np.abs(acts).max() or 1.0)
    spans = []
    for t, a in zip(tokens, acts):
        alpha = min(1.0, abs(a) / lim)
        color = f"rgba(214,39,40,{alpha:.2f})" if a > 0 else f"rgba(31,119,180,{alpha:.2f})"
        spans.append(f'<span title="{a:.3f}" style="background:{color}">{html.escape(t)}</span>')
    return "".join(spans)


def plot_probe_accuracy(probes) -> go.Figure:
    """Probe accuracy by layer for POS and the control task (selectivity = gap), with the lexical baselines
    (token-id lookup, embedding probe; no context at all) as horizontal lines when the results carry them."""
    df = _frame(probes)
    fig = go.Figure()
    summary = getattr(probes, "summary", None) or {}
    for key, name, dash in (("token_lookup_accuracy", "token-id lookup", "dash"),
                            ("embedding_probe_accuracy", "embedding probe", "dashdot")):
        if summary.get(key) is not None:
            fig.add_hline(y=summary[key], line_dash=dash, line_color="#777", annotation_text=f"{name} {summary[key]:.3f}")
    groups = df.groupby("kind", sort=False) if "kind" in df else [("resid", df)]
    for kind, sub in groups:
        x = sub["site"] if "site" in sub else sub["layer"]
        fig.add_trace(go.Scatter(x=x, y=sub["accuracy"], mode="lines+markers", name=f"{kind}: UPOS"))
        if "control_accuracy" in sub:
            fig.add_trace(go.Scatter(x=x, y=sub["control_accuracy"], mode="lines+markers", line=dict(dash="dot"),
                                     name=f"{kind}: control task"))
    fig.update_layout(title="Linear probes for UPOS (held-out accuracy)", xaxis_title="layer", yaxis_title="accuracy",
                      yaxis_range=[0, 1])
    return fig


EFFECT_GROUPS = ("FUNCTION", "CONTENT", "NAME", "DET", "NOUN", "VERB", "ADJ", "PRON", "ADP", "PUNCT")


def plot_head_effects(heads: list[dict], layer: int | None = None, head: int | None = None, kind: str = "dla",
                      groups: tuple[str, ...] = EFFECT_GROUPS) -> go.Figure:
    """Output effect by next-token group with 95% story-bootstrap CIs.

    ``heads``: the per-head rows of the head analysis (``heads_axes.json`` or
    :func:`tinyinterp.analysis.heads.claims.analyse_heads` ``["heads"]``); ``kind``: ``dla`` (direct
    logit attribution to the correct next token) or ``mean`` / ``resample`` (loss increase when the
    head is ablated). One head (``layer`` and ``head``) as bars; otherwise one line per head of
    ``layer`` (every head when ``layer`` is None), the per-layer view.
    """
    if kind not in ("dla", "mean", "resample"):
        raise ValueError(f"kind={kind!r}: use 'dla', 'mean' or 'resample'")
    rows = [r for r in heads if (layer is None or r["layer"] == layer) and (head is None or r["head"] == head)]
    if not rows:
        raise ValueError(f"no head L{layer}H{head} in the results")
    unit = "logit (vs the average token)" if kind == "dla" else "loss increase (nats)"
    fig = go.Figure()
    for r in rows:
        eff = r.get("effects", {}).get(kind)
        if eff is None:
            raise ValueError(f"the results have no {kind!r} effects (run the ablations)")
        gs = [g for g in groups if g in eff and eff[g]["estimate"] is not None]
        est = np.array([eff[g]["estimate"] for g in gs], dtype=float)
        lo = np.array([eff[g]["ci_low"] if eff[g]["ci_low"] is not None else np.nan for g in gs], dtype=float)
        hi = np.array([eff[g]["ci_high"] if eff[g]["ci_high"] is not None else np.nan for g in gs], dtype=float)
        err = dict(type="data", symmetric=False, array=hi - est, arrayminus=est - lo)
        name = f"L{r['layer']}H{r['head']} ({r.get('label', '?')})"
        if len(rows) == 1:
            fig.add_trace(go.Bar(x=gs, y=est, error_y=err, name=name,
                                 hovertemplate="next %{x}<br>%{y:.3f}<extra></extra>"))
        else:
            fig.add_trace(go.Scatter(x=gs, y=est, error_y=err, mode="lines+markers", name=name))
    where = f"L{layer}H{head}" if head is not None else (f"layer {layer}" if layer is not None else "all heads")
    fig.update_layout(title=f"{kind} by next-token group, {where}", xaxis_title="next token", yaxis_title=unit)
    return fig


def plot_head_axes(heads: list[dict]) -> go.Figure:
    """The two label axes with their null-derived thresholds (dashed), one point per head, coloured by label."""
    df = pd.DataFrame([{"layer": r["layer"], "head": r["head"], "label": r["label"],
                        "positional_r2": r["positional"]["r2"], "content_js": r["content"]["js"]} for r in heads])
    fig = go.Figure()
    for lab, sub in df.groupby("label"):
        fig.add_trace(go.Scatter(x=sub["positional_r2"], y=sub["content_js"], mode="markers", name=str(lab),
                                 marker=dict(size=10, color=LABEL_COLORS.get(str(lab), "#333")),
                                 text=[f"L{int(a)}H{int(b)}" for a, b in zip(sub["layer"], sub["head"])],
                                 hovertemplate="%{text}<br>R² %{x:.3f}<br>JS %{y:.3f}<extra></extra>"))
    fig.add_vline(x=heads[0]["positional"]["min_r2"], line_dash="dash", annotation_text="positional null q99")
    fig.add_hline(y=heads[0]["content"]["min_js"], line_dash="dash", annotation_text="content null q99")
    fig.update_layout(title="Label axes against their nulls", xaxis_title="position-only surrogate R² (held out)",
                      yaxis_title="content JS (bits, real vs shuffled)")
    return fig
