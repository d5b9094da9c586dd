"""Features: a checkpoint's SAE features through the neuron rules, searchable; per feature its dashboard."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps.explorer import catalog, links, readings, sae_data, state, store

N_TEXTS = 60  # model-written stories the dashboards read (the first ones of the analysis corpus)


@st.cache_resource(show_spinner="Loading the SAE…", max_entries=4)
def _sae(ckpt: str, fingerprint: str, sae_dir: str, sae_fp: str):
    import tinyinterp

    return tinyinterp.load_sae(sae_dir, model=state.model(Path(ckpt)))


@st.cache_data(show_spinner="Reading the feature on the texts…", max_entries=64)
def _dashboard(ckpt: str, fingerprint: str, sae_dir: str, sae_fp: str, feature: int, texts: tuple[str, ...]) -> dict:
    import tinyinterp

    model = state.model(Path(ckpt))
    sae = _sae(ckpt, fingerprint, sae_dir, sae_fp)
    return tinyinterp.feature_dashboards(model, sae, list(texts), [feature], n_examples=8, ablation=True)[0].to_json()


ckpt = state.require_checkpoint(params=("feature",))
st.title(f"Features · {readings.md(ckpt.name)}")
folders = sae_data.sae_folders(ckpt)
if not folders:
    st.info(f"{readings.md(ckpt.name)} has no sparse autoencoder (a folder `sae/<hook>/` in SAELens' format). Train one with "
            "`tinyinterp sae train CKPT --hook blocks.0.mlp.hook_post --data STORIES --out CKPT/sae/blocks.0.mlp.hook_post`.")
    st.stop()
sae_dir = st.selectbox("SAE", folders, format_func=lambda p: p.name, key=f"features:sae:{ckpt}")
fp, sae_fp = catalog.fingerprint(ckpt), catalog.fingerprint(sae_dir, ("cfg.json", "sae_weights.safetensors"))
model = state.model(ckpt)
try:
    sae = _sae(str(ckpt), fp, str(sae_dir), sae_fp)
except Exception as exc:  # noqa: BLE001 - a bad SAE folder gets one line, not a traceback
    st.error(readings.md(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, limit=400))
    st.stop()

res = state.results(ckpt)
table = sae_data.load_table(res.dir)
if table is None or sae_dir.name not in [s["name"] for s in table.saes]:
    cached = store.cache_root(ckpt) / f"features-{sae_dir.name}-{sae_fp[:12]}"
    table = sae_data.load_table(cached)
    if table is None and st.button("Run the features through the neuron rules on the analysis stories"):
        with state.running("Classifying features (identity rules, lookup baseline, story bootstrap)…",
                           "Feature table ready (cached)", "Could not classify the features"):
            table = sae_data.compute_features(model, state.tagged_corpus(ckpt), sae_dir, cached)
entry = next((s for s in table.saes if s["name"] == sae_dir.name), None) if table is not None else None
if entry is None:
    st.caption("No feature table for this SAE yet: `tinyinterp analyze CKPT --corpus STORIES --features SAE_DIR` writes "
               "one, or use the button above. The dashboards below work without it.")
    df = sae_data.empty_rows()
else:
    st.caption(f"{entry['n_live']} of {entry['d_sae']} features fire on the analysis stories. Rows: feature × tag "
               "candidates (selection-half AUROC ≥ 0.9), measured on held-out stories with the neuron rules: **pos** = "
               "beyond token identity, **token** = a token detector, **untestable** = too little support.")
    with st.expander("Best neuron vs best feature per part of speech", expanded=True):
        st.dataframe(sae_data.comparison_frame(entry), hide_index=True, key=f"features:compare:{ckpt}")
    df = sae_data.rows_frame(table, sae_dir.name)
    f1, f2, f3 = st.columns(3)
    tags = f1.multiselect("Part of speech", sorted(df["tag"].unique()), key="features:tag")
    cats = f2.multiselect("Category", list(sae_data.CATEGORIES), key="features:category")
    query = f3.text_input("Search (feature ids or a tag)", key="features:query")
    min_auroc = st.slider("Minimum held-out AUROC", 0.0, 1.0, 0.0, 0.01, key="features:min_auroc")
    df = sae_data.filter_rows(df, tags, cats, min_auroc, query)
    st.dataframe(df, hide_index=True, key=f"features:table:{ckpt}")
    st.caption(f"{len(df)} rows.")

layer = sae_data.hook_layer(entry["hook"] if entry else sae.cfg.metadata.hook_name)
key = f"feature:{ckpt}:{sae_dir.name}"
wanted = state.from_url("feature")
if wanted is not None:
    unit, why = links.parse_unit(wanted, "F", layer + 1, int(sae.cfg.d_sae), ckpt.name)
    if unit is None:
        st.info(why)
    else:
        st.session_state[key] = unit[1]
if key not in st.session_state:
    st.session_state[key] = int(df["feature"].iloc[0]) if len(df) else 0
feature = int(st.number_input(f"Feature (0–{sae.cfg.d_sae - 1})", 0, int(sae.cfg.d_sae) - 1, key=key))
state.to_url("feature", links.unit_id("F", layer, feature))

st.subheader(f"Feature L{layer}F{feature}")
source = st.radio("Top activations on", ["model-written stories", "your text"], horizontal=True, key="features:source")
if source == "your text":
    user = st.text_area("Text", "Once upon a time, there was a little dog. The dog liked to play in the park.",
                        key="features:text")
    texts, label = tuple(t for t in [user] if t.strip()), "your text"
else:
    texts, label = tuple(state.stories(ckpt)[:N_TEXTS]), "story"
if not texts:
    st.info("Write some text to read the feature on.")
    st.stop()
board = _dashboard(str(ckpt), fp, str(sae_dir), sae_fp, feature, texts)
st.session_state["features:board"] = board
if board["examples"]:
    for ex in board["examples"]:
        st.markdown(readings.inert_html(sae_data.example_html(ex, label)), unsafe_allow_html=True)
else:
    st.info(f"L{layer}F{feature} does not fire on these texts.")
left, right = st.columns(2)
with left:
    state.show("features.histogram", sae_data.histogram(board, feature))
    state.show("features.logits", sae_data.logit_bars(board))
with right:
    rows = [r for r in (table.rows if entry else []) if r.get("sae") == sae_dir.name and r["feature"] == feature]
    best = [b for b in (entry or {}).get("best_features", {}).values() if b.get("feature") == feature]
    shares = (rows or best or [{}])[0].get("top_tags")
    if shares:
        state.show("features.pos", sae_data.pos_breakdown(shares, feature))
    else:
        st.caption("POS breakdown: this feature is neither a candidate nor a tag's best feature in the feature table.")
    st.markdown(f"**Ablation** (this feature set to zero through the SAE, error term kept): next-token loss on these "
                f"texts changes by **{readings.num(board['ablation_loss_delta'], '+.4f')}** nats per token.")
    for a in (entry or {}).get("ablation", []):
        if f"L{layer}F{feature}" in a["units"]:
            st.markdown(f"In the analysis' {readings.md(a['tag'], 20)} set ({readings.md(', '.join(a['units']))}), mean-"
                        f"ablated on held-out stories: target loss {readings.num(a['delta_target'], '+.4f')} vs matched random "
                        f"{readings.num(a['random_delta_target_mean'], '+.4f')} (p = {readings.num(a['p_random'], '.3f')}, "
                        f"BH q = {readings.num(a.get('q_random'), '.3f')} across the ablated tags).")
