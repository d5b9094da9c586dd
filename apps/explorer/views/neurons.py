"""Neurons: filterable, sortable table; per neuron its POS distribution, examples, logit effects, ablation."""

from __future__ import annotations

import streamlit as st

from apps.explorer import catalog, figures, links, readings, state
from tinyinterp import plots
from tinyinterp.analysis.neurons.identity_report import identity_tables, load_identity

COLUMNS = ["layer", "neuron", "pos", "auroc", "ap", "cohens_d", "q_value", "selective", "top_k_precision",
           "n_word_types_top_k", "ambiguous_auroc"]
FORMATS = {"auroc": "%.3f", "ap": "%.3f", "cohens_d": "%.2f", "q_value": "%.1e", "top_k_precision": "%.2f",
           "ambiguous_auroc": "%.3f", "mean_pos": "%.3f", "mean_neg": "%.3f"}
SORTS = {"held-out AUROC": ("auroc", False), "AP": ("ap", False), "Cohen's d": ("cohens_d", False),
         "q-value": ("q_value", True), "layer, neuron": ("layer", True)}


def number_formats() -> dict:
    return {c: st.column_config.NumberColumn(format=f) for c, f in FORMATS.items()}


def describe_ablation(a: dict, what: str) -> None:
    num, tag = readings.num, readings.md(a.get("tag"), 20)
    st.markdown(f"Mean-ablating {what} raises the loss on the token after a {tag} by **{num(a.get('delta'), '+.4f')}** "
                f"nats (random sets of the same size: {num(a.get('random_mean'), '+.4f')}; on other tokens "
                f"{num(a.get('delta_other'), '+.4f')}; p = {num(a.get('p_value'), '.3f')}, "
                f"{num(a.get('n_positions'), '.0f')} positions).")
    st.session_state["neurons:ablation_shown"] = a


ckpt = state.require_checkpoint(params=("neuron",))
res = state.results(ckpt)
st.title(f"Neurons · {readings.md(ckpt.name)}")
if res.neurons is None or not res.neurons.rows:
    st.info("This analysis has no neuron results; re-run `tinyinterp analyze` without --no-neurons.")
    st.stop()

df = res.neurons.to_frame()
s = res.neurons.summary
st.caption(f"One row per neuron × part of speech tested on held-out stories ({readings.num(s.get('n_stories_held_out'), '.0f')} "
           f"stories); selective = AUROC ≥ {readings.num(s.get('auroc_threshold'), 'g')} on both halves and "
           f"q < {readings.num(s.get('fdr'), 'g')} (Benjamini–Hochberg).")

sparse = (getattr(res, "summary", None) or {}).get("sparse_probes") or {}
if sparse:
    with st.expander("How many neurons does a part of speech need? (k-sparse probes)"):
        st.markdown("Neurons ranked on one half of the stories; a logistic regression on the top *k*, scored by "
                    "AUROC on the other half. A tag no single neuron passes may still be read from a few together.")
        st.dataframe([{"part of speech": t, "best single neuron": round(v["k1_auroc"], 3),
                       "neurons for AUROC 0.9": str(v["k_for_0.9"] or "not reached"),
                       "all neurons": round(v["all_neurons_auroc"], 3)} for t, v in sparse.items()],
                     hide_index=True, key=f"neurons:sparse:{ckpt}")

identity = load_identity(res.dir)
if identity is not None:
    with st.expander("Part of speech beyond token identity (pos / token / untestable)", expanded=True):
        st.markdown("A **pos** neuron generalises to token ids it was not selected on and tells ambiguous words apart "
                    "within one token id (\"play\" the noun vs the verb; story-bootstrap CI above 0.5); a **token** neuron "
                    "fails one of these. The token-id lookup (no model) is the baseline every number must beat.")
        per_tag, id_rows = identity_tables(identity)
        st.dataframe(per_tag, hide_index=True, key=f"neurons:identity_tags:{ckpt}")
        if id_rows:
            st.dataframe(id_rows, hide_index=True, key=f"neurons:identity_rows:{ckpt}")

f1, f2, f3, f4 = st.columns(4)
tags = f1.multiselect("Part of speech", sorted(df["pos"].unique()), key="neurons:pos")
layers = f2.multiselect("Layer", sorted(df["layer"].unique()), key="neurons:layer")
only = f3.checkbox("Selective only", value=False, key="neurons:selective")
sort = f4.selectbox("Sort by", list(SORTS), key="neurons:sort")
min_auroc = st.slider("Minimum held-out AUROC", 0.0, 1.0, 0.0, 0.01, key="neurons:min_auroc")

view = df
if tags:
    view = view[view["pos"].isin(tags)]
if layers:
    view = view[view["layer"].isin(layers)]
if only:
    view = view[view["selective"]]
view = view[view["auroc"].fillna(0) >= min_auroc]
col, asc = SORTS[sort]
view = view.sort_values([col, "neuron"], ascending=[asc, True]).reset_index(drop=True)
st.session_state["neuron_table"] = view
table = st.dataframe(view[[c for c in COLUMNS if c in view]], hide_index=True, on_select="rerun", column_config=number_formats(),
                     selection_mode="single-row", key=f"neurons:table:{ckpt}")
st.caption(f"{len(view)} of {len(df)} rows. Click a row or use the picker below.")
if view.empty:
    st.info("No neuron matches these filters.")
    st.stop()

choices = list(dict.fromkeys(links.unit_id("N", r.layer, r.neuron) for r in view.itertuples()))
key = f"neuron:{ckpt}"
wanted = state.from_url("neuron")
if wanted is not None:  # a link to this view: show its neuron (even one without a table row), or say why not
    shape = catalog.read_card(ckpt)["shape"]
    unit, why = links.parse_unit(wanted, "N", int(shape["n_layers"] or 1), int(shape["d_mlp"] or 0), ckpt.name)
    if unit is None:
        st.info(why)
    else:
        st.session_state[key] = st.session_state["neurons:linked"] = links.unit_id("N", *unit)
linked = st.session_state.get("neurons:linked")
if linked and linked not in choices:
    choices.insert(0, linked)
picked = table.selection.rows if table is not None and hasattr(table, "selection") else []
if picked and picked[0] < len(view):
    r = view.iloc[picked[0]]
    clicked = f"L{int(r['layer'])}N{int(r['neuron'])}"
    if st.session_state.get("neurons:last_click") != clicked:
        st.session_state["neurons:last_click"] = clicked
        st.session_state[key] = clicked
if st.session_state.get(key) not in choices:
    st.session_state[key] = choices[0]
choice = st.selectbox("Neuron", choices, key=key)
layer, neuron = (int(x) for x in choice[1:].split("N"))
st.session_state["selected_neuron"] = (layer, neuron)
state.to_url("neuron", choice)

rows = df[(df["layer"] == layer) & (df["neuron"] == neuron)]
st.subheader(f"Neuron L{layer}N{neuron}")
st.dataframe(rows[[c for c in COLUMNS + ["mean_pos", "mean_neg", "n_pos", "n_neg"] if c in rows]], hide_index=True,
             column_config=number_formats())

acts, act_tags = state.layer_acts(ckpt, layer)
if len(act_tags):
    state.show("neurons.distribution", figures.activations_by_pos(acts[:, neuron], act_tags, layer, neuron))

st.subheader("Max-activating examples (held-out stories)")
examples = res.neurons.examples.get(f"{layer}.{neuron}")
if not examples:
    import tinyinterp

    with st.spinner("Finding this neuron's max-activating examples…"):
        examples = tinyinterp.max_activating_examples(state.model(ckpt), state.tagged_corpus(ckpt), layer, neuron, k=5)
    st.caption("Not stored with the analysis (only the leading neurons are); computed now on the analysis corpus.")
shown = [readings.example_html(ex) for ex in examples or []]
for block in filter(None, shown):
    st.markdown(block, unsafe_allow_html=True)  # readings.example_html escapes everything from the file
if len(shown) > sum(map(bool, shown)):
    st.caption(f"{len(shown) - sum(map(bool, shown))} stored example(s) could not be read (not a list of tokens "
               "with one activation each) and are not shown.")

left, right = st.columns(2)
with left:
    st.subheader("Promoted / suppressed tokens")
    fig = figures.logit_effects(rows.iloc[0].to_dict()) if not rows.empty else None
    if fig is None:
        st.info("No direct logit effects stored for this neuron.")
    else:
        state.show("neurons.logits", fig)
with right:
    st.subheader("Ablation effect")
    hits = [a for a in res.ablation if [layer, neuron] in [list(x) for x in a["neurons"]]]
    for a in hits:
        units = readings.md(", ".join(f"L{x}N{y}" for x, y in a["neurons"]))
        describe_ablation(a, f"the top {readings.md(a.get('tag'), 20)} neurons ({units})")
    tag = str(rows.iloc[0]["pos"]) if not rows.empty else "NOUN"
    if not hits:
        st.caption("This neuron was not in the analysis' ablated sets (the top neurons of NOUN, VERB and ADJ).")
    key = f"ablate:{ckpt}:{layer}.{neuron}:{tag}"
    if st.button(f"Ablate L{layer}N{neuron} alone (after {tag} tokens)", key="neurons:ablate"):
        st.session_state[key] = state.ablation(ckpt, layer, neuron, tag)
    if key in st.session_state:
        describe_ablation(st.session_state[key], f"L{layer}N{neuron} alone")
