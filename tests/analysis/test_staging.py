"""Results folders are whole or refused: a killed analysis never leaves new results beside old ones unmarked."""

from __future__ import annotations

import pytest

from tests.support.kills import killed_at_rename
from tinyinterp.analysis.results_io import COMPLETE, STAGING, check_complete, commit, staged_results
from tinyinterp.errors import TinyInterpError


def _run(out, files: dict[str, str], fail_after: int | None = None):
    with staged_results(out, {"run": "x"}) as stage:
        for i, (name, text) in enumerate(files.items()):
            if fail_after is not None and i == fail_after:
                raise KeyboardInterrupt  # a kill while computing
            (stage / name).write_text(text)


def test_complete_run_is_marked_and_verified(tmp_path):
    out = tmp_path / "a"
    _run(out, {"heads.json": "[1]", "summary.json": "{}"})
    m = check_complete(out)
    assert set(m["files"]) == {"heads.json", "summary.json"} and m["run"] == "x"
    assert not (out / STAGING).exists()
    (out / "heads.json").write_text("[2]")  # a file of another run (same name)
    with pytest.raises(TinyInterpError, match="not the file the analysis wrote") as err:
        check_complete(out)
    assert "\n" not in str(err.value)


def test_kill_while_computing_keeps_the_previous_analysis(tmp_path):
    out = tmp_path / "a"
    _run(out, {"heads.json": "[1]", "summary.json": "{\"old\": 1}"})
    (out / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        _run(out, {"heads.json": "[2]", "neurons.json": "[]", "summary.json": "{}"}, fail_after=2)
    assert (out / "heads.json").read_text() == "[1]" and not (out / "neurons.json").exists()
    check_complete(out)
    assert (out / "notes.txt").read_text() == "mine" and not (out / STAGING).exists()


def test_kill_during_the_swap_is_refused_then_mended(tmp_path):
    out = tmp_path / "a"
    _run(out, {"heads.json": "[1]", "summary.json": "{\"old\": 1}", "probes.json": "{}"})
    stage = out / STAGING
    stage.mkdir()
    (stage / "heads.json").write_text("[2]")
    (stage / "summary.json").write_text("{}")
    with killed_at_rename("summary.json"):  # commit renames the marker aside, then heads.json, then summary.json
        commit(stage, out)
    assert (out / "heads.json").read_text() == "[2]" and (out / "summary.json").read_text() == "{\"old\": 1}"
    for legacy_ok in (False, True):  # even a reader that accepts folders older than the marker refuses this one
        with pytest.raises(TinyInterpError, match="killed while moving its results in"):
            check_complete(out, legacy_ok=legacy_ok)
    (out / ".heads.json.abc.tmp").write_text("half")  # a killed atomic write
    _run(out, {"heads.json": "[2]", "summary.json": "{}"})  # the rerun (without probes) mends it
    m = check_complete(out)
    assert set(m["files"]) == {"heads.json", "summary.json"}
    assert not (out / "probes.json").exists()  # the previous run's file this run did not write
    assert not list(out.glob(".*.tmp")) and not (out / STAGING).exists()


def test_a_folder_without_marker_is_refused(tmp_path):
    (tmp_path / "heads.json").write_text("[]")
    with pytest.raises(TinyInterpError, match="killed or is still running"):
        check_complete(tmp_path)
    (tmp_path / COMPLETE).write_text("[1, 2")
    with pytest.raises(TinyInterpError, match="unreadable"):
        check_complete(tmp_path)


def test_legacy_folder_accepted_only_when_asked_and_never_mid_swap(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "heads.json").write_text("[0]")  # written before complete.json existed
    assert check_complete(out, legacy_ok=True) is None
    stage = out / STAGING
    stage.mkdir()
    (stage / "heads.json").write_text("[1]")
    with killed_at_rename("heads.json"):
        commit(stage, out)
    with pytest.raises(TinyInterpError, match="killed while moving"):
        check_complete(out, legacy_ok=True)
    _run(out, {"heads.json": "[1]"})
    assert set(check_complete(out)["files"]) == {"heads.json"}
