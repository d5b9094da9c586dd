"""The Compare page: two checkpoints, or two training snapshots of one, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from apps.explorer import catalog, comparison
from tests.explorer.conftest import APP
from tests.explorer.test_links import open_link, params

REPO = Path(__file__).resolve().parents[2]


def no_errors(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def label_counts(heads_json: Path) -> dict[tuple[int, str], int]:
    out: dict[tuple[int, str], int] = {}
    for h in json.loads(heads_json.read_text()):
        out[(h["layer"], h["label"])] = out.get((h["layer"], h["label"]), 0) + 1
    return out


def test_sides_list_checkpoints_and_their_snapshots(explorer_root):
    entries = catalog.list_checkpoints(explorer_root, extra=[])
    sides = comparison.list_sides(entries)
    steps = [s for s, _ in catalog.list_snapshots(explorer_root / "tiny-1l")]
    assert [s.short for s in sides] == ["tiny-1l", *(f"tiny-1l@{s}" for s in steps), "tiny-raw"]
    assert comparison.find_side(sides, f"tiny-1l@{steps[0]}").step == steps[0]
    assert comparison.find_side(sides, str(explorer_root / "tiny-1l")).step is None
    assert comparison.find_side(sides, "tiny-1l@999999") is None and comparison.find_side(sides, "nope") is None
    # recorded bits per byte: the final evaluation; a snapshot only where training evaluated at its step
    final = json.loads((explorer_root / "tiny-1l" / "training.json").read_text())["final_eval"]
    assert comparison.recorded_bpb(sides[0])["val_bpb"] == final["val_bpb"]
    evals = {r["step"] for r in map(json.loads, (explorer_root / "tiny-1l" / "metrics.jsonl").read_text().splitlines())
             if "val_bpb" in r}
    for side in sides[1:-1]:
        assert (comparison.recorded_bpb(side) is not None) == (side.step in evals)


def test_tables_put_models_side_by_side():
    a = pd.DataFrame([{"model": "A", "tag": "NOUN", "pos_neurons": 3}, {"model": "A", "tag": "DET", "pos_neurons": 1}])
    b = pd.DataFrame([{"model": "B", "tag": "NOUN", "pos_neurons": 0}])
    wide = comparison.side_by_side(a, b, ["tag"], "pos_neurons", ("A", "B"))
    w = wide.set_index("tag")
    assert w.loc["NOUN", "A"] == 3 and w.loc["NOUN", "B"] == 0 and w.loc["DET", "A"] == 1 and pd.isna(w.loc["DET", "B"])
    assert comparison.UPOS_CATEGORY["NOUN"] == "open class" and comparison.UPOS_CATEGORY["DET"] == "closed class"


def test_compare_two_snapshots_of_one_model(explorer_env):
    steps = [s for s, _ in catalog.list_snapshots(explorer_env / "tiny-1l")]
    a, b = f"tiny-1l@{steps[0]}", f"tiny-1l@{steps[-1]}"
    at = open_link("views/compare.py", a=a, b=b)
    for _ in range(2):  # each snapshot not yet analysed in this session's cache: one button, then the next
        go = [x for x in at.button if x.key and x.key.startswith("compare:analyse:")]
        if not go:
            break
        go[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
    no_errors(at)
    assert params(at) == {"model": "tiny-1l", "a": a, "b": b}
    names = at.session_state["compare:names"]
    assert names == (a, b)
    heads = at.session_state["figures"]["compare.heads"]
    assert {t.name for t in heads.data} == {"local", "semantic", "sink", "mixed"}
    assert sum(sum(t.y) for t in heads.data) == 2 * 4  # four heads on each side
    rows = at.session_state["compare:bpb"]
    assert [r["model"] for r in rows] == list(names)
    assert all(0 < r["bits/byte on the same stories"] < 20 for r in rows)
    # the earliest snapshot is (much) worse on the same stories than the last one
    assert rows[0]["bits/byte on the same stories"] > rows[1]["bits/byte on the same stories"]


def test_compare_checkpoints_probes_on_demand_and_a_bad_link(explorer_env):
    # (b: tiny-1l, not the default other model tiny-raw, whose on-demand analysis test_pages checks)
    at = open_link("views/compare.py", a="no-such-model", b="tiny-1l")
    no_errors(at)
    assert any("The link asks for model A" in i.value and "\n" not in i.value for i in at.info)
    assert params(at)["a"] == "tiny-1l" and params(at)["b"] == "tiny-1l"  # A: the sidebar's model
    names = at.session_state["compare:names"]
    assert names == ("tiny-1l (A)", "tiny-1l (B)")
    heads = at.session_state["figures"]["compare.heads"]
    shown = {(int(x[1:]), t.name): y for t in heads.data for x, y in zip(t.x, t.y) if t.xaxis == "x"}
    assert {k: v for k, v in shown.items() if v} == label_counts(explorer_env / "tiny-1l" / "analysis" / "heads.json")
    assert "compare.probes" not in at.session_state["figures"]  # the test analyses ran without probes
    fit = [x for x in at.button if x.key and x.key.startswith("compare:probes:")]
    assert [x.key for x in fit] == ["compare:probes:tiny-1l"]  # one button: A and B are the same model
    fit[0].click().run()
    no_errors(at)
    probes = at.session_state["figures"]["compare.probes"]
    assert {t.name for t in probes.data} >= {f"{names[0]}: UPOS", f"{names[0]}: control task"}
    acc = [t for t in probes.data if t.name == f"{names[0]}: UPOS"][0]
    assert list(acc.x) == ["embed", "mlp0", "resid0"] and all(0 < v <= 1 for v in acc.y)


def test_compare_the_bundled_model_with_itself(monkeypatch):
    """The bundled checkpoint's precomputed analysis (with probes) on the Compare page."""
    from streamlit.testing.v1 import AppTest

    root = REPO / "checkpoints"
    monkeypatch.setenv("TINYINTERP_EXPLORER_ROOT", str(root))
    monkeypatch.delenv("TINYINTERP_EXPLORER_CKPT", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.query_params["a"] = at.query_params["b"] = "ts-1l"
    at.switch_page("views/compare.py")
    at.run()
    no_errors(at)
    assert at.session_state["compare:names"] == ("ts-1l (A)", "ts-1l (B)")
    rows = at.session_state["compare:bpb"]
    assert rows[0]["bits/byte on the same stories"] == rows[1]["bits/byte on the same stories"]
    card = json.loads((root / "ts-1l" / "training.json").read_text())["final_eval"]
    assert rows[0]["validation bits/byte recorded in training"] == round(card["val_bpb"], 4)
    pos = at.session_state["figures"]["compare.pos"]
    expected = json.loads((root / "ts-1l" / "analysis" / "summary.json").read_text())["neurons"]["pos_per_tag"]
    assert dict(zip(pos.data[0].x, pos.data[0].y)) == expected
    probes = at.session_state["figures"]["compare.probes"]
    assert len(probes.data) == 4 and list(probes.data[0].y) == list(probes.data[2].y)
