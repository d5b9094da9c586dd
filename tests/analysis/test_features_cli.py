"""`tinyinterp analyze --features SAE_DIR` end to end on the tiny checkpoint, and its one-line errors for a wrong SAE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tinyinterp.cli.main import main

STORIES = Path(__file__).resolve().parents[1] / "golden" / "stories.txt"
HOOK = "blocks.0.mlp.hook_post"


def _sae(folder: Path, d_in: int, model_name: str, hook: str = HOOK, d_sae: int = 48) -> Path:
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae) / d_in ** 0.5)
        sae.W_dec.copy_(sae.W_enc.T)
        sae.b_enc.fill_(-0.05)
    sae.cfg.metadata.hook_name, sae.cfg.metadata.model_name = hook, model_name
    sae.save_model(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_sae(tiny_ckpt, tmp_path_factory) -> Path:
    import tinyinterp

    model = tinyinterp.load_model(tiny_ckpt)
    return _sae(tmp_path_factory.mktemp("sae") / HOOK, model.cfg.d_mlp, model.cfg.model_name)


def test_analyze_with_features_writes_the_table(tiny_ckpt, tiny_sae, tmp_path, capsys):
    import tinyinterp

    out = tmp_path / "a"
    rc = main(["analyze", str(tiny_ckpt), "--corpus", str(STORIES), "--out", str(out), "--max-stories", "30",
               "--no-heads", "--no-probes", "--no-control", "--no-ablation", "--features", str(tiny_sae)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert f"{HOOK}: " in printed.out and "feature L0F" in printed.out
    for name in ("features.json", "features.csv", "features_summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["features"][HOOK]
    assert entry["hook"] == HOOK and entry["d_sae"] == 48 and 0 < entry["n_live"] <= 48
    tags = {r["tag"] for r in entry["comparison"]}
    assert {"NOUN", "VERB"} <= tags
    row = entry["comparison"][0]
    assert {"neuron_auroc", "feature_auroc", "neuron_ambiguous_auroc", "feature_top_k_precision", "feature_n_top_types",
            "feature_category", "neuron_category"} <= set(row)
    assert row["neuron_unit"].startswith("L0.N") and row["feature_unit"].startswith("L0F")
    assert {a["tag"] for a in entry["ablation"]} >= {"NOUN", "VERB"}
    res = tinyinterp.FeatureResults.load(out)
    assert res.saes[0]["name"] == HOOK and all(r["sae"] == HOOK for r in res.rows)
    assert "Sparse-autoencoder features vs neurons" in (out / "report.html").read_text()
    assert "features.json" in json.loads((out / "complete.json").read_text())["files"]


@pytest.mark.parametrize("damage, match", [
    ("model", "trained on model 'someone-else'"),
    ("hook", "needs an SAE on blocks.L.mlp.hook_post"),
    ("corrupt", "unreadable safetensors"),
    ("d_in", "W_enc has shape"),
    ("width", "has width"),
])
def test_analyze_refuses_a_wrong_sae_in_one_line_before_analysing(tiny_ckpt, tiny_sae, tmp_path, capsys, damage, match):
    import shutil

    import tinyinterp

    model = tinyinterp.load_model(tiny_ckpt)
    bad = tmp_path / "bad"
    if damage == "model":
        _sae(bad, model.cfg.d_mlp, "someone-else")
    elif damage == "hook":
        _sae(bad, model.cfg.d_model, model.cfg.model_name, hook="blocks.0.hook_resid_post")
    elif damage == "width":  # consistent files, but for a narrower hook_post
        _sae(bad, model.cfg.d_mlp // 2, model.cfg.model_name)
    else:
        shutil.copytree(tiny_sae, bad)
        if damage == "corrupt":
            (bad / "sae_weights.safetensors").write_bytes(b"\x00" * 64)
        else:
            cfg = json.loads((bad / "cfg.json").read_text())
            cfg["d_in"] = model.cfg.d_mlp * 2
            (bad / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "a"
    rc = main(["analyze", str(tiny_ckpt), "--corpus", str(STORIES), "--out", str(out), "--max-stories", "5",
               "--features", str(tiny_sae), str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1 and match in err, err
    assert not out.exists()  # refused before any analysis ran
