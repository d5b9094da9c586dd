"""Heads: label grid; per head its scores with controls, offset profile, attention, evidence, reading."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.explorer import figures, links, readings, state
from tinyinterp import plots

ckpt = state.require_checkpoint(params=("head",))
res = state.results(ckpt)
st.title(f"Heads · {readings.md(ckpt.name)}")
if res.heads is None:
    st.info("This analysis has no head classification; re-run `tinyinterp analyze` without --no-heads.")
    st.stop()

heads = res.heads
grid = plots.plot_head_grid(heads)
grid.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1))
state.show("heads.grid", grid)
records = sorted(heads.records, key=lambda r: (r.layer, r.head))
options = [f"{links.unit_id('H', r.layer, r.head)} · {r.label}" for r in records]
key = f"head:{ckpt}"
wanted = state.from_url("head")
if wanted is not None:  # a link to this view: select its head, or say in one line why not
    n_layers, n_heads = max(r.layer for r in records) + 1, max(r.head for r in records) + 1
    unit, why = links.parse_unit(wanted, "H", n_layers, n_heads, ckpt.name)
    where = {(r.layer, r.head): i for i, r in enumerate(records)}
    if unit is None or unit not in where:
        st.info(why or f"The link asks for head {readings.md(wanted, 40)}, which this analysis does not cover; showing the "
                "first head.")
    else:
        st.session_state[key] = options[where[unit]]
choice = st.selectbox("Head", options, key=key, help="Layer L, head H, and its label")
rec = records[options.index(choice)]
st.session_state["selected_head"] = (rec.layer, rec.head)
state.to_url("head", links.unit_id("H", rec.layer, rec.head))

st.markdown(readings.explain_head(rec, heads.config))
st.caption(f"{'Axis values' if rec.axes else 'Rule that fired'}: {readings.md(rec.reason, 400)}")

left, right = st.columns(2)
with left:
    st.subheader("Scores and their controls")
    st.dataframe(pd.DataFrame(readings.score_table(rec)), hide_index=True)
with right:
    state.show("heads.offset", plots.plot_offset_profile(rec.offset_profile, rec.layer, rec.head))

axes_file = res.dir / "heads_axes.json"
if axes_file.is_file():  # output effects and the two-axis label (tinyinterp analyze >= issue 12)
    import json

    axes_rows = json.loads(axes_file.read_text(encoding="utf-8"))
    ax = next(r for r in axes_rows if (r["layer"], r["head"]) == (rec.layer, rec.head))
    st.subheader(f"What L{rec.layer}H{rec.head} produces · label: {ax['label']}")
    kinds = [k for k in ("dla", "mean", "resample") if k in ax.get("effects", {})]
    kind = st.radio("Effect", kinds, horizontal=True, key="heads:effect",
                    format_func={"dla": "direct logit attribution", "mean": "mean-ablation loss change",
                                 "resample": "resample-ablation loss change"}.get)
    ci = lambda d: "n/a" if d is None or d.get("estimate") is None else (  # noqa: E731
        f"{d['estimate']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d.get("ci_low") is not None else f"{d['estimate']:+.3f}")
    eff = ax["effects"][kind]
    st.caption(f"Per predicted token, 95% story-bootstrap CI ({'logit' if kind == 'dla' else 'nats of loss added'}): "
               f"function words {ci(eff.get('FUNCTION'))} · content words {ci(eff.get('CONTENT'))} · "
               f"names {ci(eff.get('NAME'))}")
    fx_l, fx_r = st.columns(2)
    with fx_l:
        state.show("heads.effects", plots.plot_head_effects(axes_rows, rec.layer, rec.head, kind=kind))
    with fx_r:
        pos, con = ax["positional"], ax["content"]
        st.dataframe(pd.DataFrame([
            {"axis": "positional R² (held out)", "value": pos["r2"], "null threshold": pos["min_r2"], "passes": pos["pass"]},
            {"axis": "previous-token score", "value": pos["tl_previous_token"], "null threshold": pos["previous_token_min"],
             "passes": pos["pass"]},
            {"axis": "content JS (bits)", "value": con["js"], "null threshold": con["min_js"], "passes": con["js_pass"]},
            {"axis": "OV copying (eigenvalues)", "value": ax["copying"].get("eigen"), "null threshold": None, "passes": None},
        ]), hide_index=True)
        if con["categories"]:
            st.caption(f"Category lift vs the head's offset profile (pass: lift ≥ {con['min_lift']:.2f} and BH q ≤ {con['fdr']})")
            st.dataframe(pd.DataFrame(con["categories"]), hide_index=True)
    with st.expander(f"Per-layer view · layer {rec.layer}: every head's {kind} by next-token group"):
        state.show("heads.layer_effects", plots.plot_head_effects(axes_rows, layer=rec.layer, kind=kind))
    claim = res.summary.get("paper_claim", {}).get("statement")
    if claim:
        st.info(f"Paper claim on this model: {claim}")

st.subheader("Attention on a story")
source = st.radio("Text", ["A story from the analysis corpus", "My own text"], horizontal=True, key="heads:source")
model = state.model(ckpt)
if source == "My own text":
    raw = st.text_area("Text", "Once upon a time, Lily found a red ball. Lily gave the ball to Tom.", key="heads:text")
else:
    stories = state.stories(ckpt)
    idx = st.selectbox("Story", range(len(stories)), format_func=lambda i: f"{i}: {stories[i][:70]}…", key="heads:story")
    raw = stories[idx]
try:
    prepared = readings.prepare_text(model.tokenizer, raw, int(model.cfg.n_ctx))
except ValueError as hint:
    st.info(str(hint))
else:
    if prepared.notice:  # typed text: a warning; a long corpus story is expected, so only a note
        (st.warning if source == "My own text" else st.caption)(prepared.notice)
    state.show("heads.attention", plots.plot_attention(model, prepared.text, rec.layer, rec.head))

ev_l, ev_r = st.columns(2)
with ev_l:
    st.subheader("Top attended categories")
    if rec.top_categories:
        state.show("heads.categories", figures.top_categories(rec))
        st.dataframe(pd.DataFrame(rec.top_categories), hide_index=True)
    else:
        st.info("No category had enough support.")
with ev_r:
    st.subheader("Top attended tokens")
    if rec.top_tokens:
        st.dataframe(pd.DataFrame(rec.top_tokens), hide_index=True)
    else:
        st.info("No token occurred often enough to be listed.")

with st.expander("All heads: positional fit against content dependence"):
    state.show("heads.scatter", plots.plot_head_scatter(heads, "positional_r2", "content_js"))
    frame = heads.to_frame()
    st.dataframe(frame[[c for c in ["layer", "head", "label", "positional_r2", "content_js", "tl_previous_token",
                                    "mean_distance", "near_mass", "prev_token", "bos_mass", "top_category",
                                    "top_category_lift", "pattern_label", "profile_r2"] if c in frame.columns]],
                 hide_index=True)
