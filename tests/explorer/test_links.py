"""Shareable views: the model, head and neuron are in the URL, a link opens the same view, a bad link says why."""

from __future__ import annotations

import json

import pytest

from apps.explorer import links
from tests.explorer.conftest import APP


def open_link(page: str, **params: str):
    """A new session (as a browser opening a link): AppTest with these query parameters, on ``page``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    if page:
        at.switch_page(page)  # the first run is already on that page, as a link to /heads opens
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def params(at) -> dict:
    return {k: at.query_params[k] for k in at.query_params}


def test_parse_unit_names_heads_and_neurons_and_explains_the_rest():
    assert links.parse_unit("L0H3", "H", 1, 8, "m") == ((0, 3), None)
    assert links.parse_unit(" l2n511 ", "N", 4, 512, "m") == ((2, 511), None)
    unit, why = links.parse_unit("L0H8", "H", 1, 8, "ts-1l")
    assert unit is None and why.count("\n") == 0
    assert "L0H8" in why and "1 layer of 8 heads (L0H0–L0H7)" in why
    for bad in ("L0N3", "banana", "L-1H2", "", "L0H" + "9" * 20):
        unit, why = links.parse_unit(bad, "H", 1, 8, "m")
        assert unit is None and "not a head name" in why
    assert links.split_side("ts-4l@801") == ("ts-4l", 801) and links.split_side("ts-4l") == ("ts-4l", None)
    assert links.split_side("/a/b@c") == ("/a/b@c", None)
    assert links.view_url("http://h:1/", "heads", model="ts-1l", head="L0H3", neuron=None) == \
        "http://h:1/heads?model=ts-1l&head=L0H3"


def test_head_link_round_trips(explorer_env):
    at = open_link("views/heads.py")
    assert params(at) == {"model": "tiny-1l", "head": "L0H0"}
    box = next(s for s in at.selectbox if s.label == "Head")
    box.select(box.options[2]).run()
    assert params(at) == {"model": "tiny-1l", "head": "L0H2"}
    again = open_link("views/heads.py", **params(at))  # someone opens the copied link
    assert again.session_state["selected_head"] == (0, 2)
    assert params(again) == {"model": "tiny-1l", "head": "L0H2"}
    # the URL applies once: the widgets win afterwards
    box = next(s for s in again.selectbox if s.label == "Head")
    box.select(box.options[1]).run()
    assert again.session_state["selected_head"] == (0, 1) and params(again)["head"] == "L0H1"


@pytest.mark.parametrize("bad,why", [("L3H0", "has 1 layer of 4 heads"), ("L0H4", "has 1 layer of 4 heads"),
                                     ("<b>x</b>", "not a head name")])
def test_link_to_a_missing_head_says_so_in_one_line(explorer_env, bad, why):
    at = open_link("views/heads.py", model="tiny-1l", head=bad)
    assert not at.error
    msgs = [i.value for i in at.info if "The link asks for head" in i.value]
    assert len(msgs) == 1 and why in msgs[0] and "\n" not in msgs[0] and "<b>" not in msgs[0]
    assert at.session_state["selected_head"] == (0, 0) and params(at)["head"] == "L0H0"


def test_neuron_link_round_trips_even_without_a_table_row(explorer_env):
    at = open_link("views/neurons.py")
    first = params(at)["neuron"]
    table = at.session_state["neuron_table"]
    listed = set(table["neuron"])
    d_mlp = json.loads((explorer_env / "tiny-1l" / "config.json").read_text())["d_mlp"]
    unlisted = next((f"L0N{n}" for n in range(d_mlp) if f"L0N{n}" not in listed), f"L0N{d_mlp - 1}")
    at = open_link("views/neurons.py", model="tiny-1l", neuron=unlisted)
    assert at.session_state["selected_neuron"] == tuple(int(x) for x in unlisted[1:].split("N"))
    assert params(at) == {"model": "tiny-1l", "neuron": unlisted}
    assert at.session_state["figures"]["neurons.distribution"].layout.title.text.startswith(f"Activation of {unlisted} ")
    at = open_link("views/neurons.py", model="tiny-1l", neuron="L0N99999")
    msgs = [i.value for i in at.info if "The link asks for neuron" in i.value]
    assert len(msgs) == 1 and "L0N99999" in msgs[0] and "\n" not in msgs[0]
    assert params(at)["neuron"] == first


def test_model_link_by_name_or_path_and_unknown_model(explorer_env):
    at = open_link("views/playground.py", model="tiny-raw")  # (the Playground does not analyse tiny-raw)
    assert at.title[0].value == "Playground · tiny-raw" and params(at) == {"model": "tiny-raw"}
    at = open_link("", model=str(explorer_env / "tiny-1l"))  # a path to a picker entry is written back as its name
    assert at.title[0].value == "tiny-1l" and params(at) == {"model": "tiny-1l"}
    at = open_link("", model="no-such-model")
    assert any("that is not here" in w.value for w in at.sidebar.warning)
    assert at.title[0].value == "tiny-1l"
    at = open_link("", model="/no/such/folder")  # a folder path: as if typed into the picker
    assert any("does not exist" in e.value for e in at.error) and not at.exception


def test_a_page_drops_parameters_it_does_not_own(explorer_env):
    at = open_link("", model="tiny-1l", head="L0H2", neuron="L0N1")
    assert params(at) == {"model": "tiny-1l"}
