"""Training dynamics: head labels and POS selectivity across the checkpoint's training snapshots."""

from __future__ import annotations

import streamlit as st

from apps.explorer import catalog, figures, readings, state, store

ckpt = state.require_checkpoint()
st.title(f"Training dynamics · {readings.md(ckpt.name)}")
snaps = catalog.list_snapshots(ckpt)
if not snaps:
    st.info("This checkpoint has no training snapshots (`snapshots/step_N/`). "
            "Train with `tinyinterp train … --snapshots 8` to keep log-spaced snapshots.")
    st.stop()

st.caption(f"{len(snaps)} snapshot(s): steps {', '.join(f'{s:,}' for s, _ in snaps)}. Each is analysed on the same "
           "stories as the final model (heads and neurons; no controls), on demand, and cached on disk.")
cap = st.slider("Snapshots to analyse", 1, len(snaps), min(len(snaps), 8), key="dyn:cap")
chosen = store.pick_snapshots(snaps, cap)
missing = [s for s, _ in chosen if not store.snapshot_done(ckpt, s)]
if missing:
    st.info(f"{len(chosen) - len(missing)} of {len(chosen)} chosen snapshots are analysed. Analysing the rest "
            f"(steps {', '.join(f'{s:,}' for s in missing)}) takes a while for larger models.")
    if st.button(f"Analyse {len(missing)} snapshot(s)", key="dyn:go", type="primary"):
        with state.running("Analysing snapshots…", "Snapshots analysed", "Could not analyse the snapshots") as progress:
            store.analyze_snapshots(ckpt, chosen, progress)
        st.rerun()

done = [(s, store.snapshot_dir(ckpt, s)) for s, _ in chosen if store.snapshot_done(ckpt, s)]
if not done:
    st.stop()
heads, pos = store.dynamics_tables(done)
st.session_state["dynamics_tables"] = (heads, pos)
if not heads.empty:
    left, right = st.columns(2)
    with left:
        state.show("dynamics.labels", figures.labels_over_steps(heads))
    with right:
        state.show("dynamics.timeline", figures.head_label_timeline(heads))
if not pos.empty:
    left, right = st.columns(2)
    with left:
        state.show("dynamics.selective", figures.selectivity_over_steps(pos, "pos_neurons"))
    with right:
        state.show("dynamics.auroc", figures.selectivity_over_steps(pos.dropna(subset=["best_auroc"]), "best_auroc"))
metrics = catalog.read_metrics(ckpt)
if not metrics.empty:
    st.subheader("Training curves")
    state.show("dynamics.curves", figures.training_curves(metrics))
with st.expander("Per-head scores at every analysed step"):
    st.dataframe(heads, hide_index=True)
