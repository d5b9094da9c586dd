"""Streamlit glue: the model picker, the URL of the view, cached loading, progress, figure registry.

This is the only module (with the pages) that imports Streamlit. Cache keys hold the
checkpoint path *and* a fingerprint of its files (size + mtime), so a retrained or
re-analysed checkpoint is never shown from a stale cache.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import streamlit as st

from apps.explorer import catalog, links, readings, store

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

    # means from the selection half, ablated on the held-out half (the neuron analysis' split), matched random neurons
    return tinyinterp.neuron_ablation(_model(path, fingerprint), _tagged_corpus(path, fingerprint, corpus_fp),
                                      [(layer, neuron)], tag, tinyinterp.AblationConfig(max_stories=100))


@st.cache_data(show_spinner=False, max_entries=32)
def _stories(path: str, fingerprint: str, corpus_fp: str) -> list[str]:
    return store.ensure_corpus(Path(path))


def _corpus_fp(ckpt: Path) -> str:
    f = store.corpus_file(ckpt)
    return catalog.fingerprint(f.parent, (f.name,)) if f else "none"


# --- the URL (shareable views; see links.py) -----------------------------------------------------

def from_url(param: str) -> str | None:
    """The URL's ``param`` when a link just brought it (not yet applied in this session), else None.

    Pages call this before drawing the widget that ``param`` drives and put the value into the
    widget's state; after the widget they call :func:`to_url`. So the URL wins once, when it is
    opened, and the widgets win afterwards.
    """
    value = st.query_params.get(param)
    if value is None or st.session_state.get(f"url:{param}") == value:
        return None
    st.session_state[f"url:{param}"] = value
    return value


def to_url(param: str, value: str | None) -> None:
    """Write the view's ``param`` into the URL (None removes it)."""
    st.session_state[f"url:{param}"] = value
    if value is None:
        if param in st.query_params:
            del st.query_params[param]
    elif st.query_params.get(param) != value:
        st.query_params[param] = value


def keep_url(params: tuple[str, ...]) -> None:
    """Drop query parameters this page does not own (a head's link opened on another page)."""
    for k in [k for k in st.query_params if k not in (links.MODEL, *params)]:
        del st.query_params[k]


# --- the picker ----------------------------------------------------------------------------------

def _apply_model_link(entries: list[catalog.CheckpointEntry], labels: list[str]) -> None:
    wanted = from_url(links.MODEL)
    if wanted is None:
        return
    entry = catalog.find_entry(entries, wanted)
    if entry is not None:
        st.session_state["model_choice"] = entry.label
    elif Path(wanted).is_absolute() and wanted.isprintable() and "`" not in wanted:  # a folder here: as if typed
        st.session_state["model_choice"] = OTHER
        st.session_state["model_path"] = wanted
    else:
        st.sidebar.warning(f"The link asks for a model “{readings.md(wanted, 60)}” that is not here; showing "
                           f"{readings.md(st.session_state.get('model_choice') or labels[0])}.")


def sidebar() -> None:
    """Model picker (in the sidebar): bundled checkpoints, command-line paths, or a typed folder."""
    entries = catalog.list_checkpoints()
    labels = [e.label for e in entries] + [OTHER]
    default = 0
    if not catalog.command_line_paths():
        default = next((i for i, e in enumerate(entries) if e.name == "ts-1l"), 0)
    if st.session_state.get("model_choice") not in labels:
        st.session_state["model_choice"] = labels[default]
    st.sidebar.title("tinyinterp explorer")
    _apply_model_link(entries, labels)
    choice = st.sidebar.selectbox("Model", labels, key="model_choice",
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
    raw = st.session_state["ckpt"]
    names = {e.name: e.path for e in reversed(entries)}  # a name shared by two entries means the first, as in find_entry
    to_url(links.MODEL, links.model_id(Path(raw).expanduser().resolve(), names) if raw else None)
    if not entries:
        st.sidebar.info(f"No checkpoints under `{catalog.checkpoints_root()}`. Train one with `tinyinterp train` "
                        "or pass a folder: `tinyinterp explore PATH`.")
    st.sidebar.caption("Hugging Face GPT-Neo/GPT-2 folders (such as a downloaded official TinyStories model) open "
                       "too: choose “Another folder…” or run `tinyinterp explore FOLDER`.")


def require_checkpoint(params: tuple[str, ...] = ()) -> Path:
    """The chosen checkpoint folder; on a bad choice, a friendly message and the page stops.

    Every page calls this first: it draws the model picker in the sidebar (pages, not
    ``Home.py``, draw it, so a page run on its own shows it too), keeps only the URL
    parameters the page owns (``params``, plus ``model``) and empties the figure registry
    for the page's figures.
    """
    apply_argv()
    keep_url(params)
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


@contextlib.contextmanager
def running(label: str, done: str, failed: str) -> Iterator[store.Progress]:
    """A status box with a progress bar around a long computation; yields its ``progress(msg, frac)``
    callback. On an error: the box turns red, one line says why, and the page stops."""
    with st.status(label, expanded=True) as status:
        bar, line = st.progress(0.0), st.empty()

        def progress(msg: str, frac: float | None) -> None:
            line.write(msg)
            if frac is not None:
                bar.progress(min(max(frac, 0.0), 1.0))

        try:
            yield progress
        except Exception as exc:  # noqa: BLE001 - one line, not a traceback
            status.update(label=failed, state="error")
            st.error(f"{failed}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            st.stop()
        status.update(label=done, state="complete", expanded=False)


def results(ckpt: Path) -> store.Results:
    """Precomputed or cached analysis; computes it (with a visible status) when there is none."""
    found = store.find_analysis(ckpt)
    if found is None:
        with running(f"No precomputed analysis for {ckpt.name}: analysing it now (cached for next time)…",
                     f"Analysis of {ckpt.name} ready (cached in {store.computed_dir(ckpt)})",
                     f"Could not analyse {ckpt.name}") as progress:
            store.compute_analysis(ckpt, progress)
        found = store.find_analysis(ckpt)
        assert found is not None
    return results_in(*found)


def results_in(folder: Path, precomputed: bool) -> store.Results:
    """The results in ``folder`` (cached until one of its files changes); one line, not a traceback, for a
    folder that is not one complete analysis."""
    import tinyinterp

    try:
        return _results(str(folder), precomputed, catalog.fingerprint(folder, RESULT_FILES))
    except tinyinterp.TinyInterpError as exc:
        st.error(readings.md(str(exc).splitlines()[0], limit=400))
        st.stop()


def stories(ckpt: Path) -> list[str]:
    if store.corpus_file(ckpt) is None:
        with st.spinner("Writing a few stories with the model (first time only)…"):
            store.ensure_corpus(ckpt)
    return _stories(str(ckpt), catalog.fingerprint(ckpt), _corpus_fp(ckpt))


def tagged_corpus(ckpt: Path):
    model(ckpt)  # a checkpoint that does not load: one line, not a traceback from the cached loaders below
    stories(ckpt)
    return _tagged_corpus(str(ckpt), catalog.fingerprint(ckpt), _corpus_fp(ckpt))


def layer_acts(ckpt: Path, layer: int):
    model(ckpt)
    stories(ckpt)
    return _layer_acts(str(ckpt), catalog.fingerprint(ckpt), _corpus_fp(ckpt), layer)


def ablation(ckpt: Path, layer: int, neuron: int, tag: str) -> dict:
    """Mean-ablation of one neuron against matched random neurons (``tinyinterp.neuron_ablation``)."""
    model(ckpt)
    stories(ckpt)
    return _ablation(str(ckpt), catalog.fingerprint(ckpt), _corpus_fp(ckpt), layer, neuron, tag)


@st.cache_data(show_spinner=False, max_entries=64)
def _bits_per_byte(path: str, fingerprint: str, stories_file: str) -> dict:
    import tinyinterp

    return tinyinterp.evaluate_checkpoint(path, [stories_file], progress=False).to_json()


def bits_per_byte(folder: Path, stories_file: Path) -> dict:
    """``tinyinterp.evaluate_checkpoint`` of ``folder`` on a stories file (loss, bits_per_byte, tokens, …)."""
    return _bits_per_byte(str(folder), catalog.fingerprint(folder), str(stories_file))


def probes_of(ckpt: Path, step: int | None, have: Any) -> Any:
    """The analysis' probes when it has them, else those the explorer fitted and cached (or None)."""
    if have is not None:
        return have
    f = store.probes_file(ckpt, step)
    if not f.is_file():
        return None
    import tinyinterp

    return tinyinterp.ProbeResults.load(f.parent)


# --- figures -------------------------------------------------------------------------------------

def show(name: str, fig: Any, **kwargs: Any) -> None:
    """Draw a plotly figure and keep it in ``st.session_state["figures"][name]`` (tests read it there)."""
    st.session_state.setdefault("figures", {})[name] = fig
    st.plotly_chart(fig, **kwargs)


def reset_figures() -> None:
    st.session_state["figures"] = {}
