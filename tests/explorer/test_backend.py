"""The explorer's plain-Python parts: checkpoint catalogue, cache keys, readings, text preparation, store."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from apps.explorer import catalog, readings, store
from tinyinterp.analysis.heads import HeadRecord


def test_list_checkpoints_orders_command_line_first(explorer_root, tmp_path):
    (explorer_root / "not-a-ckpt").mkdir(exist_ok=True)
    entries = catalog.list_checkpoints(explorer_root, extra=[str(tmp_path / "mine")])
    assert [e.source for e in entries] == ["command line", "bundled", "bundled"]
    assert [e.name for e in entries[1:]] == ["tiny-1l", "tiny-raw"]
    assert entries[0].label.startswith("mine (")
    # a command-line path that is also bundled is listed once
    entries = catalog.list_checkpoints(explorer_root, extra=[str(explorer_root / "tiny-1l")])
    assert [e.name for e in entries] == ["tiny-1l", "tiny-raw"]


def test_problem_messages(explorer_root, tmp_path):
    assert catalog.problem(explorer_root / "tiny-1l") is None
    assert "does not exist" in catalog.problem(tmp_path / "nope")
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert "is a file" in catalog.problem(f)
    assert "lacks config.json" in catalog.problem(tmp_path)


def test_fingerprint_changes_when_files_change(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    a = catalog.fingerprint(tmp_path)
    assert catalog.fingerprint(tmp_path) == a
    time.sleep(0.01)
    (tmp_path / "config.json").write_text('{"n_layers": 2}')
    assert catalog.fingerprint(tmp_path) != a
    b = catalog.fingerprint(tmp_path)
    os.utime(tmp_path / "config.json", ns=(1, 1))
    assert catalog.fingerprint(tmp_path) != b


def test_read_card_and_metrics(explorer_root, tmp_path):
    card = catalog.read_card(explorer_root / "tiny-1l")
    assert card["shape"]["n_layers"] == 1 and card["shape"]["n_heads"] == 4 and card["n_params"] > 0
    assert card["steps"] == 60
    m = catalog.read_metrics(explorer_root / "tiny-1l")
    assert {"step", "train_loss"} <= set(m.columns) and len(m) > 0
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train_loss": 2.0}\n{"step": 2, "train_lo')  # torn line
    assert len(catalog.read_metrics(tmp_path)) == 1
    assert catalog.read_metrics(tmp_path / "none").empty
    assert catalog.read_card(tmp_path)["n_params"] is None  # no training.json: no crash


def test_snapshots_listed_and_picked(explorer_root):
    snaps = catalog.list_snapshots(explorer_root / "tiny-1l")
    assert [s for s, _ in snaps] == sorted(s for s, _ in snaps) and len(snaps) == 3
    many = [(i, Path(f"s{i}")) for i in range(20)]
    picked = store.pick_snapshots(many, 5)
    assert len(picked) == 5 and picked[0][0] == 0 and picked[-1][0] == 19
    assert store.pick_snapshots(many[:3], 8) == many[:3]
    assert store.pick_snapshots(many, 0) == []


def test_precomputed_analysis_is_found(explorer_root):
    folder, pre = store.find_analysis(explorer_root / "tiny-1l")
    assert pre and folder == explorer_root / "tiny-1l" / "analysis"
    res = store.load_results(folder, pre)
    assert len(res.heads) == 4 and res.neurons is not None and res.summary["n_layers"] == 1
    assert store.corpus_file(explorer_root / "tiny-1l") == folder / "corpus.txt"


def _record(label: str, **kw) -> HeadRecord:
    base = dict(layer=1, head=2, label=label, reason="r", positional_r2=0.8, content_js=0.02, mean_distance=1.4,
                near_mass=0.9, prev_token=0.6, entropy=1.0, entropy_norm=0.3, bos_mass=0.05, tl_previous_token=0.6,
                tl_duplicate_token=0.0, tl_induction=0.0, top_category="NOUN", top_category_lift=2.5,
                top_category_p=0.001)
    base.update(kw)
    return HeadRecord(**base)


@pytest.mark.parametrize("label,words", [
    ("local", ["L1H2 is a local head", "R² = 0.80", "90%", "60% on the previous token"]),
    ("semantic", ["L1H2 is a semantic head", "NOUN keys 2.5×", "p = 0.001"]),
    ("sink", ["L1H2 is a sink head", "first token"]),
    ("mixed", ["L1H2 is mixed", "NOUN"]),
])
def test_explain_head(label, words):
    text = readings.explain_head(_record(label, bos_mass=0.7 if label == "sink" else 0.05))
    for w in words:
        assert w in text, (w, text)


def test_explain_head_with_undefined_scores():
    text = readings.explain_head(_record("mixed", positional_r2=None, content_js=None, top_category=None))
    assert "n/a" in text
    rows = readings.score_table(_record("mixed", positional_r2=None))
    assert rows[0]["score"] == "positional_r2" and rows[0]["value"] is None


def test_prepare_text(explorer_root):
    import tinyinterp

    tok = tinyinterp.load_model(explorer_root / "tiny-1l").tokenizer
    with pytest.raises(ValueError, match="Type some text"):
        readings.prepare_text(tok, "  \n ", 64)
    short = readings.prepare_text(tok, " Lily ran. ", 64)
    assert short.text == "Lily ran." and short.notice is None
    long = readings.prepare_text(tok, "Tom saw a big dog and a small cat. " * 30, 64)
    assert long.n_tokens <= 64 and "cut to the first 64 tokens" in long.notice
    roomy = readings.prepare_text(tok, "Tom saw a big dog and a small cat. " * 30, 64, room=1)
    assert roomy.n_tokens <= 63
    huge = readings.prepare_text(tok, "a" * (readings.MAX_CHARS + 10), 10_000)
    assert len(huge.text) == readings.MAX_CHARS and "characters" in huge.notice


def test_token_html_escapes():
    html = readings.pos_html(["<b>", " cat"], ["X", "NOUN"])
    assert "&lt;b&gt;" in html and 'title="NOUN"' in html
    row = readings.attention_row_html(["a", "b", "c"], [0.2, 0.8, 0.0], 1)
    assert row.count("<span") == 3 and "outline" in row


def test_dynamics_tables(tmp_path):
    d = tmp_path / "step_0000010"
    d.mkdir()
    heads = [_record("local", layer=0, head=h).to_dict() for h in range(2)]
    (d / "heads.json").write_text(json.dumps(heads))
    (d / "neurons_summary.json").write_text(json.dumps({"pos_per_tag": {"NOUN": 3, "VERB": 0}}))
    (d / "neurons.json").write_text(json.dumps([{"tag": "NOUN", "auroc": 0.93}, {"tag": "NOUN", "auroc": 0.97}]))
    h, p = store.dynamics_tables([(10, d)])
    assert list(h["head"]) == ["L0H0", "L0H1"] and set(h["label"]) == {"local"}
    assert dict(zip(p["pos"], p["pos_neurons"])) == {"NOUN": 3, "VERB": 0}
    assert p.loc[p["pos"] == "NOUN", "best_auroc"].item() == pytest.approx(0.97)


def test_generated_stories_are_clean_corpus_text(tmp_path):
    import tinyinterp

    dirty = "Once upon\x00 a time\x07 <|endoftext|>\nthe end.\t "
    clean = store.clean_story(dirty)
    assert clean == "Once upon a time  \nthe end." and "\x00" not in clean
    f = tmp_path / "corpus.txt"
    f.write_text(clean + "\n<|endoftext|>\n")
    assert len(tinyinterp.load_stories(str(f))) == 1  # not rejected as binary, not split


def test_results_of_two_runs_are_refused(tmp_path):
    """An analysis killed while moving its results in (new heads beside an old summary) is not shown as one."""
    import shutil

    from tests.support.kills import killed_at_rename
    from tinyinterp.analysis.results_io import STAGING, commit, staged_results
    from tinyinterp.errors import TinyInterpError

    src = Path(__file__).resolve().parents[2] / "checkpoints" / "ts-1l" / "analysis"
    folder = tmp_path / "analysis"
    with staged_results(folder) as stage:  # a complete analysis (copied from the bundled one)
        for f in src.glob("*.json"):
            shutil.copy(f, stage / f.name)
    store.load_results(folder, False)
    stage = folder / STAGING
    stage.mkdir()
    (stage / "heads.json").write_text("[]")
    (stage / "summary.json").write_text("{}")
    with killed_at_rename("summary.json"):  # new heads.json in, the old summary.json still there
        commit(stage, folder)
    with pytest.raises(TinyInterpError, match="killed while moving its results in"):
        store.load_results(folder, False)


def test_a_final_evaluation_on_another_set_is_a_marker_not_a_point_of_the_curve():
    """ts-4l's metrics.jsonl evaluates on 99,840 tokens during training and on all 198,704 at the end: the
    curve stops at the last same-set point and the final evaluation is a separate, labelled marker."""
    from apps.explorer import figures

    fig = figures.training_curves(catalog.read_metrics(Path(__file__).resolve().parents[2] / "checkpoints" / "ts-4l"))
    curve, final = [t for t in fig.data if t.xaxis == "x2"]
    assert max(curve.x) == 1750 and round(curve.y[-1], 3) == 0.900 and "99,840" in curve.name
    assert list(final.x) == [1832] and round(final.y[0], 3) == 0.963
    assert final.name == "final evaluation, whole validation split (198,704 validation tokens)"
    assert fig.layout.showlegend
    # a run whose evaluations all read the same tokens: one curve, no marker
    import pandas as pd

    same = pd.DataFrame([{"step": s, "val_bpb": 2.0 - s / 100, "val_tokens": 512} for s in (10, 20, 30)])
    assert [t.name for t in figures.training_curves(same).data] == ["every evaluation, same 512 validation tokens"]


def test_explain_head_reads_the_axes_against_their_nulls():
    axes = {"positional": {"r2": 0.31, "tl_previous_token": 0.45, "min_r2": 0.519, "previous_token_min": 0.4, "pass": True},
            "content": {"js": 0.2, "min_js": 0.105, "js_pass": True, "min_lift": 1.693, "fdr": 0.05, "pass": True,
                        "categories": [{"category": "NAME", "lift": 4.0, "ci_low": 3.5, "ci_high": 4.6, "p": 1e-9,
                                        "q": 1e-8, "pass": True}]},
            "sink": {"bos_mass": 0.05, "min_bos": 0.5, "pass": False}}
    text = readings.explain_head(_record("local+semantic", axes=axes, pattern_label="semantic")).replace("\\+", "+")
    for w in ("L1H2 is local+semantic", "R² of a position-only surrogate 0.31 (null 0.519)", "previous-token score 0.45",
              "NAME: lift 4.00 [3.50, 4.60]", "null 0.105", "The older pattern-only rule said semantic"):
        assert w in text, (w, text)
    assert text.count("**passes**") == 2 and text.count("fails") == 1
