"""Backend of the Features page: a checkpoint's SAE folders, the feature table, dashboard figures (no Streamlit here).

SAE folders are ``CKPT/sae/<hook>/`` in SAELens' format (``tinyinterp sae train``). The feature
table is the ``features.json`` an ``analyze --features`` run wrote into the analysis folder, or
the one the page computed on the analysis stories and cached (``compute_features``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLUMNS = ["feature", "tag", "category", "auroc", "ambiguous_auroc", "top_k_precision", "n_top_types", "unseen_auroc",
           "lookup_auroc"]
CATEGORIES = ("pos", "token", "untestable", "none")


def sae_folders(ckpt: Path) -> list[Path]:
    """``CKPT/sae/*/`` folders holding an SAE (``cfg.json`` and ``sae_weights.safetensors``), by name."""
    root = Path(ckpt) / "sae"
    return sorted(p for p in root.glob("*") if (p / "cfg.json").is_file() and (p / "sae_weights.safetensors").is_file()) \
        if root.is_dir() else []


def hook_layer(hook: str | None) -> int:
    """The layer in a hook name (``blocks.3.mlp.hook_post`` → 3; 0 for hooks outside the blocks)."""
    parts = str(hook or "").split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else 0


def load_table(folder: Path | None):
    """The :class:`tinyinterp.FeatureResults` in ``folder`` (None when it has none)."""
    from tinyinterp import FeatureResults

    if folder is None or not FeatureResults.exists(folder):
        return None
    return FeatureResults.load(folder)


def compute_features(model, corpus, sae_dir: Path, out: Path):
    """Run ``tinyinterp.find_pos_features`` on the analysis stories (lighter: fewer resamples, no ablation); save to ``out``."""
    import tinyinterp

    cfg = tinyinterp.FeatureConfig(identity=tinyinterp.IdentityConfig(n_boot=300, n_boot_types=100), ablation=None,
                                   name=Path(sae_dir).name)
    res = tinyinterp.find_pos_features(model, corpus, str(sae_dir), cfg)
    res.save(out)
    return res


def empty_rows() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)


def rows_frame(res, sae: str) -> pd.DataFrame:
    """The candidate feature x tag rows of one SAE (``category`` none where not replicated)."""
    df = pd.DataFrame([r for r in res.rows if r.get("sae") == sae])
    if df.empty:
        return empty_rows()
    df["category"] = df["category"].fillna("none")
    return df[[c for c in COLUMNS if c in df]]


def filter_rows(df: pd.DataFrame, tags: Sequence[str], categories: Sequence[str], min_auroc: float,
                query: str = "") -> pd.DataFrame:
    """Rows of the chosen tags and categories with held-out AUROC >= ``min_auroc``; ``query``: feature ids or a tag."""
    view = df
    if tags:
        view = view[view["tag"].isin(tags)]
    if categories:
        view = view[view["category"].isin(categories)]
    view = view[view["auroc"].fillna(0) >= min_auroc]
    q = query.strip()
    if q:
        ids = {int(x) for x in q.replace(",", " ").split() if x.isdigit()}
        view = view[view["feature"].isin(ids)] if ids else view[view["tag"].str.upper() == q.upper()]
    return view.sort_values(["auroc", "feature"], ascending=[False, True]).reset_index(drop=True)


def comparison_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """Best neuron vs best feature per tag, as the page shows it."""
    rows = []
    for r in entry.get("comparison", []):
        for kind in ("neuron", "feature"):
            rows.append({"tag": r["tag"], "unit": r[f"{kind}_unit"], "kind": kind, "held-out AUROC": r[f"{kind}_auroc"],
                         "ambiguous-word AUROC": r[f"{kind}_ambiguous_auroc"],
                         "top-50 precision": r[f"{kind}_top_k_precision"], "word types": r[f"{kind}_n_top_types"],
                         "category": r[f"{kind}_category"], f"pos {kind}s": r[f"n_pos_{kind}s"]})
    return pd.DataFrame(rows)


def histogram(board: dict[str, Any], feature: int) -> go.Figure:
    edges = np.asarray(board["hist_edges"], dtype=float)
    mids = (edges[:-1] + edges[1:]) / 2 if len(edges) > 1 else np.zeros(0)
    fig = go.Figure(go.Bar(x=mids, y=board["hist_counts"], marker_color="#1f77b4"))
    fig.update_layout(title=f"Nonzero activations of F{feature} ({board['frac_active']:.2%} of tokens)",
                      xaxis_title="activation", yaxis_title="tokens", height=300, margin=dict(t=40, b=40))
    return fig


def logit_bars(board: dict[str, Any]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("promoted", "suppressed"))
    for col, key, color in ((1, "promoted", "#2ca02c"), (2, "suppressed", "#d62728")):
        pairs = board[key]
        fig.add_trace(go.Bar(x=[v for _, v in pairs], y=[repr(t) for t, _ in pairs], orientation="h", marker_color=color),
                      1, col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=320, showlegend=False, margin=dict(t=40, b=40))
    return fig


def pos_breakdown(shares: dict[str, float], feature: int) -> go.Figure:
    items = sorted(shares.items(), key=lambda kv: -kv[1])
    fig = go.Figure(go.Bar(x=[k for k, _ in items], y=[v for _, v in items], marker_color="#9467bd"))
    fig.update_layout(title=f"Tags of F{feature}'s top held-out activations", yaxis_title="share", height=300,
                      margin=dict(t=40, b=40))
    return fig


def example_html(ex: dict[str, Any], texts_label: str) -> str:
    """One top activation: its token window shaded by the feature (tokens escaped by ``text_activation_html``)."""
    from tinyinterp import text_activation_html  # escapes the tokens

    return (f"<div style='font-family:monospace'>{text_activation_html([str(t) for t in ex['tokens']], np.asarray(ex['acts']))}"
            f"</div><small>activation {float(ex['activation']):.3f} · {texts_label} {int(ex['text']) + 1}, "
            f"token {int(ex['position'])}</small>")
