"""Every explorer page under ``streamlit.testing.v1.AppTest``: renders, has its widgets, reacts to them.

AppTest sees plotly charts only as unknown elements, so the pages keep each figure they draw
in ``st.session_state["figures"][name]`` and the tests read the figures there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def figs(at) -> dict:
    return at.session_state["figures"]


def no_errors(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def z(fig) -> np.ndarray:
    return np.asarray(fig.data[0].z, dtype=float)


def test_overview(app, explorer_root):
    no_errors(app)
    assert app.title[0].value == "tiny-1l"
    assert {"Layers × heads", "Parameters", "Validation bits/byte", "Tokens seen"} <= {m.label for m in app.metric}
    picker = app.selectbox(key="model_choice")
    assert picker.value == "tiny-1l" and {"tiny-1l", "tiny-raw", "Another folder…"} <= set(picker.options)
    assert {"overview.curves", "overview.labels"} <= set(figs(app))
    labels = [h["label"] for h in json.loads((explorer_root / "tiny-1l" / "analysis" / "heads.json").read_text())]
    assert list(figs(app)["overview.labels"].data[0].y) == [labels.count(x) for x in ("local", "semantic", "sink", "mixed")]
    assert any(m.value.startswith("**Heads:**") for m in app.markdown)
    # training curve comes from metrics.jsonl
    assert len(figs(app)["overview.curves"].data[0].x) > 0


def test_heads_switching_head_changes_figures(app):
    app.switch_page("views/heads.py").run()
    no_errors(app)
    assert app.title[0].value == "Heads · tiny-1l"
    box = next(s for s in app.selectbox if s.label == "Head")
    assert len(box.options) == 4 and box.options[0].startswith("L0H0 · ")
    before = {k: figs(app)[k] for k in ("heads.attention", "heads.offset", "heads.grid")}
    assert app.session_state["selected_head"] == (0, 0)
    assert any("L0H0" in m.value for m in app.markdown)  # the plain-English reading
    box.select(box.options[2]).run()
    no_errors(app)
    after = figs(app)
    assert app.session_state["selected_head"] == (0, 2)
    assert after["heads.attention"].layout.title.text == "Attention of head L0H2"
    assert not np.allclose(z(before["heads.attention"]), z(after["heads.attention"]))
    assert list(before["heads.offset"].data[0].y) != list(after["heads.offset"].data[0].y)
    assert any("L0H2" in m.value for m in app.markdown)
    assert app.dataframe  # scores table, categories, tokens
    # issue 12: what the head produces (effects by next-token group with CIs) and its axes against the nulls
    fx = after["heads.effects"]
    assert fx.layout.title.text.startswith("dla by next-token group, L0H2") and fx.data[0].error_y.array is not None
    assert any(s.value and "L0H2 produces · label:" in s.value for s in app.subheader)


def test_heads_typed_text_empty_and_too_long(app):
    app.switch_page("views/heads.py").run()
    app.radio(key="heads:source").set_value("My own text").run()
    no_errors(app)
    assert "heads.attention" in figs(app)
    app.text_area(key="heads:text").input("   ").run()
    no_errors(app)
    assert any("Type some text" in i.value for i in app.info)
    assert "heads.attention" not in figs(app)
    app.text_area(key="heads:text").input("The dog ran to the park. " * 60).run()
    no_errors(app)
    assert any("cut to the first 64 tokens" in w.value for w in app.warning)
    assert len(figs(app)["heads.attention"].data[0].z) == 64


def test_neurons_table_filters_and_switch(app):
    app.switch_page("views/neurons.py").run()
    no_errors(app)
    assert app.title[0].value == "Neurons · tiny-1l"
    # the decision: a per-tag table with categories, the untrained control, paper form and the lexical baseline
    per_tag = [t.value for t in app.dataframe if "lookup AUROC" in t.value.columns and "pos" in t.value.columns]
    assert len(per_tag) == 1 and {"token", "untestable", "untrained pos", "paper-form neurons"} <= set(per_tag[0].columns)
    table = app.session_state["neuron_table"]
    assert {"neuron", "tag", "category", "AUROC", "top-k precision", "AP lift", "ambiguous CI", "lookup AUROC"} <= set(table.columns)
    assert list(table["AUROC"]) == sorted(table["AUROC"], reverse=True)
    box = app.selectbox(key=next(k for k in [s.key for s in app.selectbox] if k and k.startswith("neuron:")))
    first, second = box.options[0], box.options[1]
    d0 = figs(app)["neurons.distribution"]
    box.select(second).run()
    no_errors(app)
    layer, neuron = (int(x) for x in second[1:].split("N"))
    assert app.session_state["selected_neuron"] == (layer, neuron)
    d1 = figs(app)["neurons.distribution"]
    assert d1.layout.title.text.startswith(f"Activation of {second} ")
    assert [list(t.y) for t in d0.data] != [list(t.y) for t in d1.data]
    # filters: sort by top-k precision; one tag only; one category only
    app.selectbox(key="neurons:sort").select("top-k precision").run()
    prec = app.session_state["neuron_table"]["top-k precision"].to_numpy(dtype=float)
    assert np.all(np.diff(prec[~np.isnan(prec)]) <= 0)
    if len(table):
        tag = table["tag"].iloc[0]
        app.multiselect(key="neurons:pos").select(tag).run()
        no_errors(app)
        assert set(app.session_state["neuron_table"]["tag"]) == {tag}
        app.multiselect(key="neurons:category").select("pos").run()
        no_errors(app)
        assert set(app.session_state["neuron_table"]["category"]) <= {"pos"}
    app.button(key="neurons:ablate").click().run()  # ablate the chosen neuron alone, now
    no_errors(app)
    shown = app.session_state["neurons:ablation_shown"]
    assert shown["neurons"] == [list(app.session_state["selected_neuron"])]
    assert len(shown["random_delta_target"]) == 40  # the default for one tag: 2 * ceil(1 / 0.05)
    assert {"delta_off_target", "ratio", "delta_target_ci"} <= set(shown)
    app.slider(key="neurons:min_auroc").set_value(1.0).run()
    no_errors(app)
    assert any("No neuron matches" in i.value for i in app.info) or len(app.session_state["neuron_table"])


def test_playground(app):
    app.switch_page("views/playground.py").run()
    no_errors(app)
    assert app.title[0].value == "Playground · tiny-1l"
    tags = app.session_state["play:tags"]
    assert tags[0][1] == "BOS" and {"NOUN", "PROPN"} & {t for _, t in tags}
    a0 = z(figs(app)["play.attention"])
    app.selectbox(key="play:head").select((0, 3)).run()
    no_errors(app)
    assert not np.allclose(a0, z(figs(app)["play.attention"]))
    n0 = z(figs(app)["play.neuron"])
    app.number_input(key="play:neuron").set_value(5).run()
    assert not np.allclose(n0, z(figs(app)["play.neuron"]))
    app.slider(key="play:query").set_value(3).run()
    assert len(figs(app)["play.row"].data[0].y) == 4
    # greedy continuation is deterministic; sampling uses the seed
    app.text_area(key="play:text").input("Lily had a red ball.").run()
    app.button(key="play:go").click().run()
    no_errors(app)
    prompt, out = app.session_state["play:continuation"]
    assert prompt == "Lily had a red ball." and out.startswith(prompt)
    app.button(key="play:go").click().run()
    assert app.session_state["play:continuation"][1] == out
    # bad input
    app.text_area(key="play:text").input("").run()
    no_errors(app)
    assert any("Type some text" in i.value for i in app.info)
    app.text_area(key="play:text").input("Tom saw a big dog. " * 50).run()
    no_errors(app)
    assert any("it was cut to the first 64 tokens" in w.value for w in app.warning)
    assert len(app.session_state["play:tags"]) == 64


def test_training_dynamics(app, explorer_root):
    app.switch_page("views/dynamics.py").run()
    no_errors(app)
    assert app.title[0].value == "Training dynamics · tiny-1l"
    go = [b for b in app.button if b.key == "dyn:go"]
    if go:  # not yet analysed in this session's cache
        go[0].click().run()
        no_errors(app)
    heads, pos = app.session_state["dynamics_tables"]
    steps = sorted(int(p.name[5:]) for p in (explorer_root / "tiny-1l" / "snapshots").iterdir())
    assert sorted(heads["step"].unique()) == steps
    assert len(heads) == 4 * len(steps)
    assert {"dynamics.labels", "dynamics.timeline"} <= set(figs(app))
    assert sum(sum(t.y) for t in figs(app)["dynamics.labels"].data) == 4 * len(steps)


def test_unknown_and_invalid_checkpoints(explorer_env, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.explorer.conftest import APP

    monkeypatch.setenv("TINYINTERP_EXPLORER_CKPT", "/nonexistent/model")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)
    at.switch_page("views/heads.py").run()
    assert not at.exception and any("does not exist" in e.value for e in at.error)
    at.selectbox(key="model_choice").select("Another folder…").run()
    assert any("Pick a model" in i.value for i in at.info)
    at.text_input(key="model_path").input(str(explorer_env)).run()
    assert not at.exception and any("lacks config.json" in e.value for e in at.error)


@pytest.mark.slow
def test_missing_analysis_is_computed_and_cached(app):
    from apps.explorer import store

    app.selectbox(key="model_choice").select("tiny-raw").run()
    no_errors(app)
    assert app.title[0].value == "tiny-raw"
    assert app.status and "ready" in app.status[0].label
    ckpt = Path(app.session_state["ckpt"])
    found = store.find_analysis(ckpt)
    assert found is not None and found[1] is False and (found[0] / "heads.json").is_file()
    assert not (ckpt / "analysis").exists()  # the checkpoint folder is left alone
    assert (store.cache_root(ckpt) / "corpus.txt").is_file()  # stories the model wrote
    app.run()  # second visit: no status, read from the cache
    assert not app.status and "overview.labels" in figs(app)


def test_neurons_page_shows_sparse_probes_of_the_bundled_model(monkeypatch):
    """checkpoints/ts-1l ships sparse_probes in its precomputed summary: the Neurons page tabulates them."""
    from streamlit.testing.v1 import AppTest

    from tests.explorer.conftest import APP

    root = Path(__file__).resolve().parents[2] / "checkpoints"
    monkeypatch.setenv("TINYINTERP_EXPLORER_ROOT", str(root))
    monkeypatch.setenv("TINYINTERP_EXPLORER_CKPT", str(root / "ts-1l"))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("views/neurons.py").run()
    no_errors(at)
    expected = json.loads((root / "ts-1l" / "analysis" / "summary.json").read_text())["sparse_probes"]
    tables = [t.value for t in at.dataframe if "neurons for AUROC 0.9" in t.value.columns]
    assert len(tables) == 1
    shown = dict(zip(tables[0]["part of speech"], tables[0]["neurons for AUROC 0.9"]))
    assert shown == {t: str(v["k_for_0.9"]) for t, v in expected.items()}
