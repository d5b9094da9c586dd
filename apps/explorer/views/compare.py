"""Compare: two checkpoints, or two training snapshots of one, side by side.

Head labels per layer, POS-selective neurons per tag and UD category, probe accuracy per site,
and bits per byte (as training recorded it, and both models on the same stories).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.explorer import catalog, comparison, figures, readings, state, store

ckpt = state.require_checkpoint(params=("a", "b"))
st.title("Compare")
entries = catalog.list_checkpoints()
if all(e.path != ckpt for e in entries):  # a folder typed into the picker
    entries.insert(0, catalog.CheckpointEntry(ckpt, "typed"))
sides = comparison.list_sides(entries)
labels = [s.label for s in sides]
names_to_paths = {e.name: e.path for e in reversed(entries)}
first = next(s for s in sides if s.entry.path == ckpt and s.step is None)
other = next((s for s in sides if s.step is None and s.entry.path != ckpt), None) or sides[-1]

pick = st.columns(2)
chosen = []
for col, param, default in zip(pick, ("a", "b"), (first, other)):
    key = f"compare:{param}"
    if st.session_state.get(key) not in labels:
        st.session_state[key] = default.label
    wanted = state.from_url(param)
    if wanted is not None:  # a link to this comparison
        found = comparison.find_side(sides, wanted)
        if found is None:
            st.info(f"The link asks for model {param.upper()} “{readings.md(wanted, 60)}”, which is not here; "
                    f"showing {readings.md(st.session_state[key])}.")
        else:
            st.session_state[key] = found.label
    side = sides[labels.index(col.selectbox(f"Model {param.upper()}", labels, key=key,
                                            help="A checkpoint, or one of its training snapshots"))]
    state.to_url(param, side.url_id(names_to_paths))
    chosen.append(side)
a, b = chosen
names = (a.short, b.short) if a.short != b.short else (f"{a.short} (A)", f"{b.short} (B)")
shown = tuple(readings.md(n) for n in names)  # names in Markdown text; ``names`` label the charts and tables
st.session_state["compare:names"] = names

# --- the analyses (computed on demand, as on the other pages) ----------------------------------------
results = []
for side, name in zip(chosen, shown):
    if side.step is None:
        results.append(state.results(side.path))
    elif store.snapshot_done(side.entry.path, side.step):
        results.append(state.results_in(store.snapshot_dir(side.entry.path, side.step), False))
    else:
        st.info(f"{readings.md(name)}: this snapshot is not analysed yet (heads and neurons, on the stories of "
                f"{readings.md(side.entry.name)}; no controls).")
        if st.button(f"Analyse {name}", key=f"compare:analyse:{side.short}", type="primary"):
            with state.running(f"Analysing {name}…", f"{name} analysed", f"Could not analyse {name}") as progress:
                store.analyze_snapshots(side.entry.path, [(side.step, side.path)], progress)
            st.rerun()
        st.stop()

def _corpus(r: store.Results) -> str:
    c = r.summary.get("corpus") if isinstance(r.summary.get("corpus"), dict) else {}
    where = "precomputed" if r.precomputed else "computed by the explorer"
    return f"{readings.num(c.get('stories'), ',.0f')} stories, {readings.num(c.get('tokens'), ',.0f')} tokens ({where})"


st.caption("Analyses: " + "; ".join(f"**{n}** on {_corpus(r)}" for n, r in zip(shown, results)) +
           ". Counts of pos neurons depend on the corpus size (the tests' power): compare them across "
           "analyses of similar size.")

# --- bits per byte -----------------------------------------------------------------------------------
st.header("Bits per byte")
with st.spinner("Evaluating both models on the same stories…"):
    shared = store.shared_stories([a.entry.path, b.entry.path])
    bpb = [state.bits_per_byte(s.path, shared) for s in chosen]
rows = []
for side, name, ev in zip(chosen, names, bpb):
    rec = comparison.recorded_bpb(side)
    rows.append({"model": name, "bits/byte on the same stories": round(ev["bits_per_byte"], 4),
                 "tokens (its tokenizer)": ev["tokens"],
                 "validation bits/byte recorded in training": None if rec is None else round(rec["val_bpb"], 4),
                 "validation tokens": None if rec is None else rec["val_tokens"]})
st.dataframe(pd.DataFrame(rows), hide_index=True)
st.session_state["compare:bpb"] = rows
n_stories = bpb[0].get("stories")
st.caption(f"Same stories: the {n_stories} stories behind the analyses of "
           f"{' and '.join(dict.fromkeys(readings.md(s.entry.name) for s in chosen))} (written by the models themselves), "
           "evaluated with `tinyinterp.evaluate_checkpoint`; bits per byte compares models with different "
           "tokenizers. Recorded: the final evaluation in `training.json` (a snapshot: the evaluation logged at its "
           "step, if any); two runs' numbers compare only when they used the same validation files.")

# --- heads -------------------------------------------------------------------------------------------
st.header("Head labels per layer")
heads = pd.concat([comparison.head_labels(r.heads, n) for r, n in zip(results, names)], ignore_index=True)
if heads.empty:
    st.info("Neither analysis has a head classification.")
else:
    state.show("compare.heads", figures.compare_head_labels(heads, names))
    wide = heads.pivot_table(index=["layer", "label"], columns="model", values="heads", aggfunc="sum").reset_index()
    with st.expander("As a table"):
        st.dataframe(wide, hide_index=True)

# --- neurons -----------------------------------------------------------------------------------------
st.header("Part-of-speech (pos) neurons")
pos = pd.concat([comparison.pos_neurons(r.neurons, n) for r, n in zip(results, names)], ignore_index=True)
if pos.empty:
    st.info("Neither analysis has neuron results.")
else:
    left, right = st.columns([3, 2])
    with left:
        state.show("compare.pos", figures.compare_bars(pos, "tag", "pos_neurons", names,
                                                       "pos neurons per part of speech", "neurons"))
    with right:
        cats = pos.groupby(["category", "model"], as_index=False)["pos_neurons"].sum()
        st.dataframe(comparison.side_by_side(cats[cats["model"] == names[0]], cats[cats["model"] == names[1]],
                                             ["category"], "pos_neurons", names), hide_index=True)
        st.caption("pos: selective beyond token identity on held-out stories (see the Neurons page); categories are Universal "
                   "Dependencies' open class, closed class and other.")
    with st.expander("Per tag, as a table"):
        st.dataframe(comparison.side_by_side(pos[pos["model"] == names[0]], pos[pos["model"] == names[1]],
                                             ["category", "tag"], "pos_neurons", names), hide_index=True)

# --- probes ------------------------------------------------------------------------------------------
st.header("Linear probes for part of speech")
probes = [state.probes_of(s.entry.path, s.step, r.probes) for s, r in zip(chosen, results)]
missing = list({s.short: (s, n) for s, n, p in zip(chosen, shown, probes) if p is None}.values())  # A may be B
for side, name in missing:
    if st.button(f"Fit the probes of {name} (about a minute)", key=f"compare:probes:{side.short}"):
        with state.running(f"Fitting the probes of {name}…", f"Probes of {name} fitted",
                           f"Could not fit the probes of {name}") as progress:
            store.compute_probes(side.entry.path, side.path, side.step, progress)
        st.rerun()
table = pd.concat([comparison.probe_accuracy(p, n) for p, n in zip(probes, names)], ignore_index=True)
if not table.empty:
    state.show("compare.probes", figures.compare_probes(table, names))
    with st.expander("As a table"):
        st.dataframe(table, hide_index=True)
    st.caption("Logistic-regression probes for UPOS on one half of the stories, scored on the other; the dotted "
               "lines are the control task (Hewitt & Liang), whose gap to the solid line is the selectivity.")
elif missing:
    st.caption("No probes yet for either model: fit them above.")
