"""Neurons: category per neuron × tag (pos / token / untestable), specificity, ambiguous-word evidence with CIs,
the lexical baseline; per neuron its tags, examples, logit effects, ablation."""

from __future__ import annotations

import streamlit as st

from apps.explorer import catalog, figures, links, readings, state
from tinyinterp import plots

COLUMNS = ["neuron", "tag", "category", "AUROC", "AUROC CI", "q", "top-k precision", "AP lift", "word types in top-k",
           "AUROC unseen ids", "ambiguous AUROC", "ambiguous CI", "ambiguous n", "lookup AUROC", "reasons"]
FORMATS = {"AUROC": "%.3f", "q": "%.1e", "top-k precision": "%.2f", "AP lift": "%.1f", "AUROC unseen ids": "%.3f",
           "ambiguous AUROC": "%.3f", "lookup AUROC": "%.3f", "lookup AUROC unseen": "%.3f", "best AUROC": "%.3f",
           "lookup AUROC unseen ids": "%.3f", "embedding AUROC unseen ids": "%.3f"}
SORTS = {"held-out AUROC": ("AUROC", False), "top-k precision": ("top-k precision", False), "AP lift": ("AP lift", False),
         "ambiguous AUROC": ("ambiguous AUROC", False), "layer, neuron": ("layer", True)}
CATEGORIES = ["pos", "token", "untestable", "none"]


def number_formats() -> dict:
    return {c: st.column_config.NumberColumn(format=f) for c, f in FORMATS.items()}


def sig(a: dict) -> str:
    """", significant" / ", not significant" from the row's BH q-value (nothing for rows without one)."""
    if a.get("significant") is None:
        return ""
    return f", {'' if a['significant'] else 'not '}significant at FDR {a.get('alpha', 0.05):g}"


def describe_ablation(a: dict, what: str) -> None:
    num, tag = readings.num, readings.md(a.get("tag"), 20)
    ci = a.get("delta_target_ci") or [None, None]
    st.markdown(f"Mean-ablating {what} on held-out stories changes the loss after a {tag} word by "
                f"**{num(a.get('delta_target'), '+.4f')}** nats (95% CI {num(ci[0], '+.4f')} to {num(ci[1], '+.4f')}) and "
                f"elsewhere by {num(a.get('delta_off_target'), '+.4f')} (ratio {num(a.get('ratio'), '.2f')}); random sets "
                f"matched on activation variance and output-weight norm: {num(a.get('random_delta_target_mean'), '+.4f')} "
                f"(p = {num(a.get('p_random'), '.3f')} over {num(a.get('n_random'), '.0f')} sets, BH q = "
                f"{num(a.get('q_random'), '.3f')}{sig(a)}; {num(a.get('n_target'), '.0f')} target positions).")
    st.session_state["neurons:ablation_shown"] = a


ckpt = state.require_checkpoint(params=("neuron",))
res = state.results(ckpt)
st.title(f"Neurons · {readings.md(ckpt.name)}")
if res.neurons is None or not res.neurons.rows:
    st.info("This analysis has no neuron results; re-run `tinyinterp analyze` without --no-neurons.")
    st.stop()

df = res.neurons.display_frame()
s = res.neurons.summary
ctrl = s.get("untrained_control") or {}
st.caption(f"One row per neuron × tag the selection half selected (AUROC ≥ {readings.num(s.get('auroc_threshold'), 'g')}); "
           f"every number is measured on the held-out half ({readings.num(s.get('n_stories_held_out'), '.0f')} stories). "
           "**pos**: replicated (story-bootstrap p, BH q < "
           f"{readings.num(s.get('fdr'), 'g')}), generalises to token ids unseen when selecting, tells ambiguous words "
           "apart within one token id (\"play\" the noun vs the verb; CI above 0.5) and spans enough word types at the "
           "top; **token**: one of those identity tests fails; **untestable**: a deciding test lacks support.")
st.markdown(f"**{readings.num(s.get('n_pos_neurons'), '.0f')}** neuron(s) with a pos row, "
            f"{readings.num(s.get('n_token_neurons'), '.0f')} token, {readings.num(s.get('n_untestable_neurons'), '.0f')} "
            f"untestable (of {readings.num(s.get('n_neurons'), '.0f')}); untrained control: "
            f"{readings.num(ctrl.get('n_pos_neurons'), '.0f')} pos, {readings.num(ctrl.get('n_token_neurons'), '.0f')} token.")
if s.get("untestable_why"):
    st.info(f"Streaming run: {readings.md(s['untestable_why'], 300)}.")
paper = s.get("paper_specificity") or {}
with st.expander("Per tag: categories, paper-form specificity, lexical baseline", expanded=True):
    if paper:
        st.markdown(f"Paper form ({readings.md(paper.get('rule', ''), 300)}): "
                    f"**{readings.num(paper.get('n_units'), '.0f')}** neuron(s). The token-id lookup and the embedding "
                    "use no MLP at all: a neuron that only matches them is reported as such.")
    st.dataframe(res.neurons.tag_table(), hide_index=True, column_config=number_formats(), key=f"neurons:tags:{ckpt}")

sparse = (getattr(res, "summary", None) or {}).get("sparse_probes") or {}
if sparse:
    with st.expander("How many neurons does a part of speech need? (k-sparse probes)"):
        st.markdown("Neurons ranked on one half of the stories; a logistic regression on the top *k*, scored by "
                    "AUROC on the other half. A tag no single neuron passes may still be read from a few together.")
        st.dataframe([{"part of speech": t, "best single neuron": round(v["k1_auroc"], 3),
                       "neurons for AUROC 0.9": str(v["k_for_0.9"] or "not reached"),
                       "all neurons": round(v["all_neurons_auroc"], 3)} for t, v in sparse.items()],
                     hide_index=True, key=f"neurons:sparse:{ckpt}")

if df.empty:
    st.info("No neuron × tag was selected on the selection half: no row to list. Pick any neuron below.")
    df = res.neurons.display_frame().reindex(columns=["neuron", "layer", "neuron_index", "tag", "category", "AUROC"])

f1, f2, f3, f4 = st.columns(4)
tags = f1.multiselect("Tag", sorted(df["tag"].unique()), key="neurons:pos")
layers = f2.multiselect("Layer", sorted(df["layer"].unique()), key="neurons:layer")
cats = f3.multiselect("Category", CATEGORIES, default=[], key="neurons:category")
sort = f4.selectbox("Sort by", list(SORTS), key="neurons:sort")
min_auroc = st.slider("Minimum held-out AUROC", 0.0, 1.0, 0.0, 0.01, key="neurons:min_auroc")

view = df
if tags:
    view = view[view["tag"].isin(tags)]
if layers:
    view = view[view["layer"].isin(layers)]
if cats:
    view = view[view["category"].isin(cats)]
view = view[view["AUROC"].fillna(0) >= min_auroc]
col, asc = SORTS[sort]
view = view.sort_values([col, "neuron_index"], ascending=[asc, True]).reset_index(drop=True)
st.session_state["neuron_table"] = view
table = st.dataframe(view[[c for c in COLUMNS if c in view]], hide_index=True, on_select="rerun", column_config=number_formats(),
                     selection_mode="single-row", key=f"neurons:table:{ckpt}")
st.caption(f"{len(view)} of {len(df)} rows. Click a row or use the picker below.")
choices = list(dict.fromkeys(links.unit_id("N", int(r.layer), int(r.neuron_index)) for r in view.itertuples()))
if not choices:  # no row (or none left by the filters): every neuron can still be looked at
    if len(df):
        st.info("No neuron matches these filters.")
    choices = [links.unit_id("N", int(x), n) for x in s.get("layers", [0]) for n in range(int(s.get("d_mlp") or 0))]
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
    clicked = f"L{int(r['layer'])}N{int(r['neuron_index'])}"
    if st.session_state.get("neurons:last_click") != clicked:
        st.session_state["neurons:last_click"] = clicked
        st.session_state[key] = clicked
if st.session_state.get(key) not in choices:
    st.session_state[key] = choices[0]
choice = st.selectbox("Neuron", choices, key=key)
layer, neuron = (int(x) for x in choice[1:].split("N"))
st.session_state["selected_neuron"] = (layer, neuron)
state.to_url("neuron", choice)

rows = df[(df["layer"] == layer) & (df["neuron_index"] == neuron)]
raw = res.neurons.to_frame()
raw = raw[(raw["layer"] == layer) & (raw["neuron"] == neuron)] if not raw.empty else raw
st.subheader(f"Neuron L{layer}N{neuron}")
if rows.empty:
    st.caption("Not selected for any tag on the selection half (no row).")
else:
    st.dataframe(rows[[c for c in COLUMNS if c in rows]], hide_index=True, column_config=number_formats())
    state.show("neurons.tags", plots.plot_neuron_selectivity(raw, layer, neuron))

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
    fig = figures.logit_effects(raw.iloc[0].to_dict()) if not raw.empty else None
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
    tag = str(rows.iloc[0]["tag"]) if not rows.empty else "NOUN"
    if not hits:
        st.caption("This neuron was not in the analysis' ablated sets (the top neurons of NOUN, VERB and ADJ).")
    key = f"ablate:{ckpt}:{layer}.{neuron}:{tag}"
    if st.button(f"Ablate L{layer}N{neuron} alone (after {tag} tokens)", key="neurons:ablate"):
        st.session_state[key] = state.ablation(ckpt, layer, neuron, tag)
    if key in st.session_state:
        describe_ablation(st.session_state[key], f"L{layer}N{neuron} alone")
