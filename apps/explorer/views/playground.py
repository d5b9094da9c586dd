"""Playground: your text, tagged by part of speech; any head's attention; any neuron; continuations."""

from __future__ import annotations

import html

import streamlit as st

import tinyinterp
from apps.explorer import figures, live, readings, state, store
from tinyinterp import plots

DEFAULT = "Once upon a time, there was a little girl named Lily. She loved to play with her red ball in the park."

ckpt = state.require_checkpoint()
st.title(f"Playground · {readings.md(ckpt.name)}")
model = state.model(ckpt)
cfg = model.cfg
raw = st.text_area("Your text", DEFAULT, height=110, key="play:text",
                   help=f"The model reads at most {cfg.n_ctx} tokens; longer text is cut.")
try:
    prepared = readings.prepare_text(model.tokenizer, raw, int(cfg.n_ctx))
except ValueError as hint:
    st.info(str(hint))
    st.stop()
if prepared.notice:
    st.warning(prepared.notice)
text = prepared.text

tokens, tags = live.tag_text(model, text)
st.subheader("Tokens by part of speech")
st.markdown(readings.pos_html(tokens, tags), unsafe_allow_html=True)
st.markdown(readings.pos_legend(tags), unsafe_allow_html=True)
st.session_state["play:tags"] = list(zip(tokens, tags))

att, neu, cont = st.tabs(["Attention", "Neuron", "Continue"])
with att:
    heads = [(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    labels = {}
    if store.find_analysis(ckpt) is not None:  # labels when the analysis exists; never start one from here
        res = state.results(ckpt)
        if res.heads is not None:
            labels = {(r.layer, r.head): r.label for r in res.heads.records}
    fmt = {h: f"L{h[0]}H{h[1]}" + (f" · {labels[h]}" if h in labels else "") for h in heads}
    layer, head = st.selectbox("Head", heads, format_func=fmt.get, key="play:head")
    state.show("play.attention", plots.plot_attention(model, text, layer, head))
    strs, pattern = live.attention_pattern(model, text, layer, head)
    q = st.slider("Query token (token-to-token view)", 0, len(strs) - 1, len(strs) - 1, key="play:query")
    st.markdown(readings.attention_row_html(strs, pattern[q], q), unsafe_allow_html=True)
    state.show("play.row", figures.attention_row(strs, pattern[q], q))
with neu:
    c1, c2 = st.columns(2)
    n_layer = c1.number_input("Layer", 0, cfg.n_layers - 1, 0, key="play:nlayer")
    neuron = c2.number_input("Neuron", 0, int(cfg.d_mlp) - 1, 0, key="play:neuron")
    toks, acts = plots.neuron_activations(model, text, int(n_layer), int(neuron))
    st.markdown(f"<div style='font-family:monospace;line-height:2'>{plots.text_activation_html(toks, acts)}</div>",
                unsafe_allow_html=True)
    state.show("play.neuron", plots.plot_text_activations(toks, acts, f"L{n_layer}N{neuron} on your text"))
with cont:
    c1, c2, c3, c4 = st.columns(4)
    mode = c1.radio("Decoding", ["greedy", "sampled"], key="play:mode")
    temp = c2.slider("Temperature", 0.1, 1.5, 0.8, 0.05, key="play:temp", disabled=mode == "greedy")
    seed = c3.number_input("Seed", 0, 10_000, 0, key="play:seed")
    n_new = c4.slider("New tokens", 5, 200, 60, key="play:n_new")
    if st.button("Continue the text", key="play:go"):
        room = readings.prepare_text(model.tokenizer, text, int(cfg.n_ctx), room=1)
        out = tinyinterp.generate_text(model, room.text, max_new_tokens=int(n_new),
                                       temperature=0.0 if mode == "greedy" else float(temp), seed=int(seed))
        st.session_state["play:continuation"] = (room.text, out)
    if "play:continuation" in st.session_state:
        prompt, out = st.session_state["play:continuation"]
        rest = out[len(prompt):] if out.startswith(prompt) else out
        st.markdown(f"<div style='font-size:1.05em'><b>{html.escape(prompt)}</b>{html.escape(rest)}</div>",
                    unsafe_allow_html=True)
