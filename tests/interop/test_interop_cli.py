"""Model references everywhere a checkpoint goes: `analyze`, `info`, `eval`, the explorer's catalog."""

from __future__ import annotations

import json

from tests.interop.conftest import REPO, TS_1L
from tinyinterp.cli.main import main

GOLDEN = REPO / "tests" / "golden" / "stories.txt"


def _labels(folder):
    return [(h["layer"], h["head"], h["label"]) for h in json.loads((folder / "heads.json").read_text())]


def test_analyze_export_gives_the_same_head_labels(tmp_path, ts1l_hf, capsys):
    """The done-when check: heads of the exported folder are labelled exactly as the original's."""
    common = ["--corpus", str(GOLDEN), "--max-stories", "50", "--no-neurons", "--no-probes", "--no-report"]
    assert main(["analyze", str(TS_1L), "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["analyze", str(ts1l_hf), "--out", str(tmp_path / "b"), *common]) == 0
    capsys.readouterr()
    a, b = _labels(tmp_path / "a"), _labels(tmp_path / "b")
    assert len(a) == 8 and a == b
    ha = json.loads((tmp_path / "a" / "heads.json").read_text())
    hb = json.loads((tmp_path / "b" / "heads.json").read_text())
    assert max(abs(x["positional_r2"] - y["positional_r2"]) for x, y in zip(ha, hb)) < 1e-4


def test_info_and_eval_on_a_hugging_face_folder(tmp_path, ts1l_hf, capsys):
    assert main(["info", str(ts1l_hf)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["n_layers"] == 1 and info["config"]["d_vocab"] == 4096
    assert main(["eval", str(ts1l_hf), "--data", str(GOLDEN), "--max-stories", "5", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert main(["eval", str(TS_1L), "--data", str(GOLDEN), "--max-stories", "5", "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert abs(ours["loss"] - ref["loss"]) < 1e-4 and ours["tokens"] == ref["tokens"]


def test_explorer_catalog_lists_hugging_face_folders(tmp_path, ts1l_hf):
    import shutil

    from apps.explorer import catalog

    assert catalog.is_checkpoint(ts1l_hf) and catalog.problem(ts1l_hf) is None
    card = catalog.read_card(ts1l_hf)
    assert card["shape"]["n_layers"] == 1 and card["shape"]["d_model"] == 256
    binary = tmp_path / "bin"  # a hub snapshot with pytorch_model.bin only
    shutil.copytree(ts1l_hf, binary)
    (binary / "model.safetensors").rename(binary / "pytorch_model.bin")
    assert catalog.is_checkpoint(binary) and catalog.problem(binary) is None and catalog.content_key(binary)
    assert "lacks config.json, model.safetensors" in catalog.problem(tmp_path)  # still explained


def test_explore_refuses_hub_name_offline(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["explore", "hf:roneneldan/TinyStories-33M", "--no-browser"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "offline" in err[0]
