"""Overview: model card, training curves, head label counts, POS-selective neurons, probes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.explorer import catalog, figures, readings, state

ckpt = state.require_checkpoint()
card = catalog.read_card(ckpt)
shape = card["shape"]
st.title(readings.md(card["name"]))
st.caption(f"Overview · {readings.md(ckpt, 300)}")

c1, c2, c3, c4 = st.columns(4)
c1.metric("Layers × heads", f"{shape.get('n_layers')} × {shape.get('n_heads')}")
c2.metric("Parameters", f"{card['n_params']:,}" if card["n_params"] else "?")
c3.metric("Validation bits/byte", f"{card['val_bpb']:.4f}" if card["val_bpb"] is not None else "not evaluated",
          help=f"Final evaluation of training, on {card['val_tokens']:,} validation tokens" if card.get("val_tokens") else None)
c4.metric("Tokens seen", f"{card['tokens_seen']:,}" if card["tokens_seen"] else "?")

left, right = st.columns([1, 2])
with left:
    st.subheader("Model card")
    rows = [{"field": k, "value": str(v)} for k, v in shape.items() if v is not None]
    rows += [{"field": "preset", "value": str(card["preset"])}, {"field": "training steps", "value": f"{card['steps'] or 0:,}"}]
    if card["wall_s"]:
        rows.append({"field": "training time", "value": f"{card['wall_s'] / 60:.1f} min"})
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.markdown("**Data:** " + (", ".join(readings.md(f, 80) for f in card["train_files"]) or "unknown"))
    for split, s in card["splits"].items():
        if s.get("stories"):
            st.caption(f"{readings.md(split, 40)}: {readings.num(s['stories'], ',.0f')} stories, "
                       f"{readings.num(s.get('tokens'), ',.0f')} tokens, {readings.num(s.get('bytes'), ',.0f')} bytes")
with right:
    st.subheader("Training curves")
    metrics = catalog.read_metrics(ckpt)
    if metrics.empty:
        st.info("This checkpoint has no metrics.jsonl, so there are no training curves to show.")
    else:
        state.show("overview.curves", figures.training_curves(metrics))

readme = catalog.card_readme(ckpt)
if readme:
    with st.expander("Full model card (README.md)"):
        st.code(readme, language="markdown", wrap_lines=True)  # its text, not rendered: it comes from a file

res = state.results(ckpt)
st.header("Analysis")
where = "precomputed in `analysis/`" if res.precomputed else f"computed by the explorer (cached in {readings.md(res.dir, 300)})"
corpus = res.summary.get("corpus") if isinstance(res.summary.get("corpus"), dict) else {}
st.caption(f"Results {where}, on {readings.num(corpus.get('stories'), ',.0f')} stories "
           f"({readings.num(corpus.get('tokens'), ',.0f')} tokens) "
           "the model wrote itself.")

h, n = st.columns(2)
with h:
    if res.heads is not None:
        labels = [r.label for r in res.heads.records]
        counts = {lab: labels.count(lab) for lab in figures.shown_labels(labels)}
        st.markdown("**Heads:** " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
        state.show("overview.labels", figures.label_counts(labels))
    else:
        st.info("No head classification in this analysis.")
with n:
    if res.neurons is not None:
        s = res.neurons.summary
        per_tag = {k: v for k, v in (s.get("pos_per_tag") or {}).items()}
        token = s.get("token_per_tag") or {}
        ctrl = s.get("untrained_control") or {}
        num = readings.num
        st.markdown(f"**Part-of-speech (pos) neurons:** {num(s.get('n_pos_neurons', 0), '.0f')} of "
                    f"{num(s.get('n_neurons'), '.0f')}; token detectors: {num(s.get('n_token_neurons', 0), '.0f')} "
                    f"(untrained control: {num(ctrl.get('n_pos_neurons'), '.0f')} pos)")
        if any(per_tag.values()) or any(token.values()):
            state.show("overview.neurons", figures.categories_by_tag(per_tag, token, ctrl.get("pos_per_tag")))
        else:
            st.info("No neuron × tag replicated on the held-out half.")
    else:
        st.info("No neuron analysis in this analysis.")

if res.probes is not None:
    from tinyinterp import plot_probe_accuracy

    st.subheader("Linear probes for part of speech")
    state.show("overview.probes", plot_probe_accuracy(res.probes))
if res.ablation:
    st.subheader("Ablation: each tag's top neurons (selection half) on held-out stories")
    st.dataframe(pd.DataFrame([{"tag": a["tag"], "neurons": ", ".join(a.get("units", [])),
                                "target Δloss": a["delta_target"], "off-target Δloss": a["delta_off_target"],
                                "ratio": a["ratio"], "matched random (mean)": a.get("random_delta_target_mean"),
                                "random sets": a.get("n_random"), "p": a["p_random"], "q (BH)": a.get("q_random"),
                                "significant": a.get("significant")} for a in res.ablation]), hide_index=True)
if card["samples"]:
    with st.expander("Samples written at the end of training"):
        for s in card["samples"][:6]:
            st.markdown(f"- *T={readings.num(s.get('temperature'), 'g')}*: {readings.md(s.get('text', ''), 2000)}")
