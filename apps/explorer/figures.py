"""Explorer-only plotly figures (the shared ones come from ``tinyinterp.plots``). No Streamlit here."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tinyinterp import LABEL_COLORS

LABELS = tuple(LABEL_COLORS)


def shown_labels(labels) -> list[str]:
    """The labels a chart lists: the four single ones always, combined ones (``local+semantic``) when some head has them."""
    seen = set(labels)
    return [lab for lab in LABELS if "+" not in lab or lab in seen]


def eval_sets(metrics: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Evaluation records grouped by the set they read: the curve first (the periodic evaluations' token
    count), then any evaluation on a different set (e.g. the whole split at the end), each named for the plot.

    Runs from before every evaluation read the same tokens logged the final one, on the whole split, in
    the same series; joining it to the curve draws a jump that is only a change of evaluation set.
    """
    if "val_bpb" not in metrics:
        return []
    ev = metrics.dropna(subset=["val_bpb"])
    if ev.empty or "val_tokens" not in ev:
        return [("validation bits/byte", ev)] if not ev.empty else []
    sizes = list(dict.fromkeys(ev["val_tokens"].fillna(-1).astype(int)))
    out = []
    for i, n in enumerate(sizes):
        part = ev[ev["val_tokens"].fillna(-1).astype(int) == n]
        what = f"{n:,} validation tokens" if n >= 0 else "another validation set"
        if i == 0:
            out.append((f"every evaluation, same {what}", part))
        elif part["step"].min() == ev["step"].max() and n > sizes[0]:
            out.append((f"final evaluation, whole validation split ({what})", part))
        else:
            out.append((f"evaluation on {what}", part))
    return out


def training_curves(metrics: pd.DataFrame) -> go.Figure:
    """Training loss and validation bits per byte against the step; an evaluation on another set (the whole
    validation split at the end) is a separate, labelled marker, not a point of the curve."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss (nats/token)", "validation bits per byte"))
    if "train_loss" in metrics:
        tr = metrics.dropna(subset=["train_loss"])
        fig.add_trace(go.Scatter(x=tr["step"], y=tr["train_loss"], mode="lines", name="train loss", showlegend=False),
                      1, 1)
    sets = eval_sets(metrics)
    for i, (name, ev) in enumerate(sets):
        if i == 0:
            fig.add_trace(go.Scatter(x=ev["step"], y=ev["val_bpb"], mode="lines+markers", name=name), 1, 2)
        else:
            fig.add_trace(go.Scatter(x=ev["step"], y=ev["val_bpb"], mode="markers+text", name=name,
                                     marker=dict(symbol="diamond", size=11, color="#d62728"),
                                     text=[f"{v:.3f}" for v in ev["val_bpb"]], textposition="top left"), 1, 2)
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=340 if len(sets) > 1 else 320, showlegend=len(sets) > 1,
                      legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="right", x=1),
                      margin=dict(t=40, b=40))
    return fig


def label_counts(labels: Sequence[str]) -> go.Figure:
    labs = shown_labels(labels)
    counts = [list(labels).count(lab) for lab in labs]
    fig = go.Figure(go.Bar(x=labs, y=counts, marker_color=[LABEL_COLORS[lab] for lab in labs],
                           text=counts, textposition="auto"))
    fig.update_layout(title="Attention heads by label", yaxis_title="heads", height=300, margin=dict(t=40, b=40))
    return fig


def categories_by_tag(pos: dict[str, int], token: dict[str, int], control: dict[str, int] | None = None) -> go.Figure:
    """Neurons per tag whose row is ``pos`` / ``token`` (and the untrained control's ``pos``)."""
    tags = sorted(set(pos) | set(token), key=lambda t: (-pos.get(t, 0), -token.get(t, 0), t))
    tags = [t for t in tags if pos.get(t, 0) or token.get(t, 0)]
    fig = go.Figure([go.Bar(x=tags, y=[pos.get(t, 0) for t in tags], name="pos (beyond token identity)"),
                     go.Bar(x=tags, y=[token.get(t, 0) for t in tags], name="token (identity explains it)")])
    if control:
        fig.add_trace(go.Bar(x=tags, y=[control.get(t, 0) for t in tags], name="untrained control: pos"))
    fig.update_layout(title="Neurons per tag by category (held out)", yaxis_title="neurons",
                      barmode="group", height=300, margin=dict(t=40, b=40))
    return fig


def top_categories(rec: Any) -> go.Figure:
    """Observed vs predicted attention mass for a head's top key categories."""
    cats = rec.top_categories or []
    names = [c["category"] for c in cats]
    fig = go.Figure([go.Bar(x=names, y=[c.get("mass") for c in cats], name="observed"),
                     go.Bar(x=names, y=[c.get("expected") for c in cats], name="predicted by distance")])
    fig.update_layout(title=f"Top attended key categories of L{rec.layer}H{rec.head}", yaxis_title="attention mass per query",
                      barmode="group", height=300, margin=dict(t=40, b=40))
    return fig


def activations_by_pos(acts: np.ndarray, tags: Sequence[str], layer: int, neuron: int) -> go.Figure:
    """Box plot of one neuron's activation per UPOS tag, tags ordered by median activation."""
    df = pd.DataFrame({"act": np.asarray(acts, dtype=float), "pos": list(tags)})
    order = df.groupby("pos")["act"].median().sort_values(ascending=False).index.tolist()
    fig = go.Figure([go.Box(y=df.loc[df["pos"] == t, "act"], name=t, boxpoints=False) for t in order])
    fig.update_layout(title=f"Activation of L{layer}N{neuron} by part of speech (analysis corpus)",
                      yaxis_title="activation (mlp.hook_post)", showlegend=False, height=340, margin=dict(t=40, b=40))
    return fig


def logit_effects(row: dict[str, Any]) -> go.Figure | None:
    """Tokens the neuron promotes / suppresses through the direct path (W_out · W_U)."""
    pt, pl = row.get("promoted_text"), row.get("promoted_logit")
    st, sl = row.get("suppressed_text"), row.get("suppressed_logit")
    if not isinstance(pt, list) or not isinstance(st, list):
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("promoted", "suppressed"))
    fig.add_trace(go.Bar(x=pl, y=[repr(t) for t in pt], orientation="h", marker_color="#2ca02c"), 1, 1)
    fig.add_trace(go.Bar(x=sl, y=[repr(t) for t in st], orientation="h", marker_color="#d62728"), 1, 2)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=320, showlegend=False, margin=dict(t=40, b=40))
    return fig


def attention_row(tokens: Sequence[str], weights: np.ndarray, query: int) -> go.Figure:
    w = np.asarray(weights, dtype=float)[: query + 1]
    fig = go.Figure(go.Bar(x=[f"{i}:{t!r}"[:20] for i, t in enumerate(tokens[: query + 1])], y=w))
    fig.update_layout(title=f"Where token {query} ({tokens[query]!r}) looks", yaxis_title="attention",
                      height=300, margin=dict(t=40, b=80))
    return fig


def labels_over_steps(heads: pd.DataFrame) -> go.Figure:
    """Stacked count of heads per label at every analysed step."""
    fig = go.Figure()
    steps = sorted(heads["step"].unique())
    for lab in shown_labels(heads["label"]):
        counts = [int(((heads["step"] == s) & (heads["label"] == lab)).sum()) for s in steps]
        fig.add_trace(go.Scatter(x=steps, y=counts, mode="lines+markers", stackgroup="one", name=lab,
                                 line=dict(color=LABEL_COLORS[lab])))
    fig.update_layout(title="Head labels over training", xaxis_title="step", yaxis_title="heads", xaxis_type="log",
                      height=320, margin=dict(t=40, b=40))
    return fig


def head_label_timeline(heads: pd.DataFrame) -> go.Figure:
    """Head × step grid coloured by label."""
    steps = sorted(heads["step"].unique())
    names = list(dict.fromkeys(heads.sort_values(["layer", "head"])["head"]))
    z = np.full((len(names), len(steps)), np.nan)
    for r in heads.itertuples():
        z[names.index(r.head), steps.index(r.step)] = LABELS.index(r.label) if r.label in LABELS else np.nan
    scale = []
    for i, lab in enumerate(LABELS):
        scale += [[i / len(LABELS), LABEL_COLORS[lab]], [(i + 1) / len(LABELS), LABEL_COLORS[lab]]]
    text = [[LABELS[int(v)] if np.isfinite(v) else "" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=[str(s) for s in steps], y=names, text=text, colorscale=scale, zmin=0,
                               zmax=len(LABELS), showscale=False, xgap=2, ygap=2,
                               hovertemplate="%{y} at step %{x}: %{text}<extra></extra>"))
    fig.update_layout(title="Label of every head at every snapshot", xaxis_title="step", xaxis_type="category",
                      height=160 + 22 * len(names), margin=dict(t=40, b=40))
    return fig


def selectivity_over_steps(pos: pd.DataFrame, value: str = "pos_neurons") -> go.Figure:
    fig = go.Figure()
    for tag, sub in pos.sort_values("step").groupby("pos"):
        fig.add_trace(go.Scatter(x=sub["step"], y=sub[value], mode="lines+markers", name=str(tag)))
    title = "pos neurons over training" if value == "pos_neurons" else "Best held-out AUROC per POS over training"
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=value, xaxis_type="log", height=340,
                      margin=dict(t=40, b=40))
    return fig


# --- Compare page ----------------------------------------------------------------------------------

COMPARE_COLORS = ("#1f77b4", "#ff7f0e")  # model A, model B


def compare_head_labels(df: pd.DataFrame, names: Sequence[str]) -> go.Figure:
    """Heads per label and layer, one panel per model (rows of ``comparison.head_labels``)."""
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=list(names), shared_yaxes=True)
    for col, name in enumerate(names, start=1):
        sub = df[df["model"] == name]
        for lab in shown_labels(df.loc[df["heads"] > 0, "label"]):
            part = sub[sub["label"] == lab]
            fig.add_trace(go.Bar(x=[f"L{v}" for v in part["layer"]], y=part["heads"], name=lab,
                                 marker_color=LABEL_COLORS[lab], legendgroup=lab, showlegend=col == 1), 1, col)
    fig.update_layout(barmode="stack", title="Head labels per layer", yaxis_title="heads", height=320,
                      margin=dict(t=60, b=40))
    return fig


def compare_bars(df: pd.DataFrame, x: str, y: str, names: Sequence[str], title: str, y_title: str) -> go.Figure:
    """Grouped bars of ``y`` per ``x``, one colour per model."""
    fig = go.Figure()
    for name, color in zip(names, COMPARE_COLORS):
        sub = df[df["model"] == name]
        fig.add_trace(go.Bar(x=sub[x], y=sub[y], name=name, marker_color=color))
    fig.update_layout(barmode="group", title=title, yaxis_title=y_title, height=320, margin=dict(t=40, b=40),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1))
    return fig


def compare_probes(df: pd.DataFrame, names: Sequence[str]) -> go.Figure:
    """Probe accuracy (solid) and control-task accuracy (dotted) per site, one colour per model."""
    fig = go.Figure()
    for name, color in zip(names, COMPARE_COLORS):
        sub = df[df["model"] == name]
        fig.add_trace(go.Scatter(x=sub["site"], y=sub["accuracy"], mode="lines+markers", name=f"{name}: UPOS",
                                 line=dict(color=color)))
        fig.add_trace(go.Scatter(x=sub["site"], y=sub["control"], mode="lines+markers", name=f"{name}: control task",
                                 line=dict(color=color, dash="dot")))
    fig.update_layout(title="Linear-probe accuracy for part of speech, by site", yaxis_title="held-out accuracy",
                      xaxis_type="category", height=340, margin=dict(t=40, b=40))
    return fig
