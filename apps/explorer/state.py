"""Streamlit glue: the model picker, cached loading, progress for on-demand analysis, figure registry.

This is the only module (with the pages) that imports Streamlit. Cache keys hold the
checkpoint path *and* a fingerprint of its files (size + mtime), so a retrained or
re-analysed checkpoint is never shown from a stale cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import streamlit as st

from apps.explorer import catalog, store

OTHER = "Another folder…"
MODEL_STATE = ("play:", "heads:", "neurons:", "dyn:", "ablate:")  # widget/result keys that belong to one model
RESULT_FILES = ("heads.json", "heads_meta.json", "neurons.json", "neurons_summary.json", "neuron_examples.json",
                "probes.json", "ablation.json", "summary.json")


def apply_argv() -> None:
    """``streamlit run Home.py -- PATH [PATH…]``: treat PATHs as command-line checkpoints."""
    if Path(sys.argv[0]).name == "Home.py" and len(sys.argv) > 1 and not os.environ.get(catalog.CKPT_ENV):
        os.environ[catalog.CKPT_ENV] = os.pathsep.join(a for a in sys.argv[1:] if not a.startswith("-"))


# --- cached loaders (keys: path + fingerprint) ---------------------------------------------------

@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _model(path: str, fingerprint: str):
    import tinyinterp

    return tinyinterp.load_model(path)


@st.cache_resource(show_spinner="Reading the analysis…", max_entries=8)
def _results(folder: str, precomputed: bool, fingerprint: str) -> store.Results:
    return store.load_results(Path(folder), precomputed)


@st.cache_resource(show_spinner="Tagging the analysis corpus…", max_entries=4)
def _tagged_corpus(path: str, fingerprint: str, corpus_fp: str):
    from apps.explorer.live import tag_stories

    return tag_stories(_model(path, fingerprint), store.ensure_corpus(Path(path)))


@st.cache_resource(show_spinner="Running the model over the corpus…", max_entries=8)
def _layer_acts(path: str, fingerprint: str, corpus_fp: str, layer: int):
    from apps.explorer.live import layer_activations

    return layer_activations(_model(path, fingerprint), _tagged_corpus(path, fingerprint, corpus_fp), layer)


@st.cache_data(show_spinner="Mean-ablating the neuron on held-out stories…", max_entries=64)
def _ablation(path: str, fingerprint: str, corpus_fp: str, layer: int, neuron: int, tag: str) -> dict:
    import tinyinterp

    _, held_out = _tagged_corpus(path, fingerprint, corpus_fp).split(0)  # the neuron analysis' reporting half
    res = tinyinterp.ablation_effect(_model(path, fingerprint), held_out, [(layer, neuron)], tag, n_random=10,
                                     max_stories=100)
    return res.to_dict()


@st.cache_data(show_spinner=False, max_entries=32)
def _stories(path: str, fingerprint: str, corpus_fp: str) -> list[str]:
    return store.ensure_corpus(Path(path))


def _corpus_fp(ckpt: Path) -> str:
    f = store.corpus_file(ckpt)
    return catalog.fingerprint(f.parent, (f.name,)) if f else "none"


# --- the picker ----------------------------------------------------------------------------------

def sidebar() -> None:
    """Model picker (in the sidebar): bundled checkpoints, command-line paths, or a typed folder."""
    entries = catalog.list_checkpoints()
    labels = [e.label for e in entries] + [OTHER]
    default = 0
    if not catalog.command_line_paths():
        default = next((i for i, e in enumerate(entries) if e.name == "ts-1l"), 0)
    st.sidebar.title("tinyinterp explorer")
    choice = st.sidebar.selectbox("Model", labels, index=default, key="model_choice",
                                  help=f"Checkpoints under {catalog.checkpoints_root()} and paths given on the command line")
    if choice == OTHER:
        typed = st.sidebar.text_input("Checkpoint folder", key="model_path", placeholder="/path/to/checkpoint")
        st.session_state["ckpt"] = typed.strip()
    else:
        st.session_state["ckpt"] = str(entries[labels.index(choice)].path)
    if st.session_state.get("previous_ckpt", st.session_state["ckpt"]) != st.session_state["ckpt"]:
        for k in [k for k in st.session_state if str(k).startswith(MODEL_STATE)]:
            del st.session_state[k]  # another model: its pages start from their defaults
    st.session_state["previous_ckpt"] = st.session_state["ckpt"]
    if not entries:
        st.sidebar.info(f"No checkpoints under `{catalog.checkpoints_root()}`. Train one with `tinyinterp train` "
                        "or pass a folder: `tinyinterp explore PATH`.")
    st.sidebar.caption("Official TinyStories models appear here once the interop issue makes them loadable.")


def require_checkpoint() -> Path:
    """The chosen checkpoint folder; on a bad choice, a friendly message and the page stops.

    Every page calls this first: it draws the model picker in the sidebar (pages, not
    ``Home.py``, draw it, so a page run on its own shows it too) and empties the figure
    registry for the page's figures.
    """
    apply_argv()
    sidebar()
    reset_figures()
    raw = st.session_state.get("ckpt", "")
    if not raw:
        st.info("Pick a model in the sidebar, or type the path of a checkpoint folder.")
        st.stop()
    why = catalog.problem(raw)
    if why:
        st.error(f"Cannot open this checkpoint: {why}")
        st.stop()
    return Path(raw).expanduser().resolve()


def model(ckpt: Path):
    try:
        return _model(str(ckpt), catalog.fingerprint(ckpt))
    except Exception as exc:  # noqa: BLE001 - a broken checkpoint gets one line, not a traceback
        st.error(f"Cannot load `{ckpt}`: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        st.stop()


def results(ckpt: Path) -> store.Results:
    """Precomputed or cached analysis; computes it (with a visible status) when there is none."""
    found = store.find_analysis(ckpt)
    if found is None:
        with st.status(f"No precomputed analysis for {ckpt.name}: analysing it now (cached for next time)…",
                       expanded=True) as status:
            bar = st.progress(0.0)
            line = st.empty()

            def progress(msg: str, frac: float | None) -> None:
                line.write(msg)
                if frac is not None:
                    bar.progress(min(max(frac, 0.0), 1.0))

            try:
                store.compute_analysis(ckpt, progress)
            except Exception as exc:  # noqa: BLE001
                status.update(label="The analysis failed", state="error")
                st.error(f"Could not analyse {ckpt.name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
                st.stop()
            status.update(label=f"Analysis of {ckpt.name} ready (cached in {store.computed_dir(ckpt)})",
                          state="complete", expanded=False)
        found = store.find_analysis(ckpt)
        assert found is not None
    folder, pre = found
    return _results(str(folder), pre, catalog.fingerprint(folder, RESULT_FILES))


def stories(ckpt: Path) -> list[str]:
    if store.corpus_file(ckpt) is None:
        with st.spinner("Writing a few stories with the model (first time only)…"):
            store.ensure_corpus(ckpt)
    return _stories(str(ckpt), catalog.fingerprint(ckpt), _corpus_fp(ckpt))


def tagged_corpus(ckpt: Path):
    stories(ckpt)
    return _tagged_corpus(str(ckpt), catalog.fingerprint(ckpt), _corpus_fp(ckpt))


def layer_acts(ckpt: Path, layer: int):
    stories(ckpt)
    return _layer_acts(str(ckpt), catalog.fingerprint(ckpt), _corpus_fp(ckpt), layer)


def ablation(ckpt: Path, layer: int, neuron: int, tag: str) -> dict:
    """Mean-ablation of one neuron against random single neurons (``tinyinterp.ablation_effect``)."""
    stories(ckpt)
    return _ablation(str(ckpt), catalog.fingerprint(ckpt), _corpus_fp(ckpt), layer, neuron, tag)


# --- figures -------------------------------------------------------------------------------------

def show(name: str, fig: Any, **kwargs: Any) -> None:
    """Draw a plotly figure and keep it in ``st.session_state["figures"][name]`` (tests read it there)."""
    st.session_state.setdefault("figures", {})[name] = fig
    st.plotly_chart(fig, **kwargs)


def reset_figures() -> None:
    st.session_state["figures"] = {}
