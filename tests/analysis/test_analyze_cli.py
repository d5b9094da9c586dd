"""`tinyinterp analyze` end to end on a tiny trained checkpoint and self-written stories."""

import json
from pathlib import Path

import pytest

from tinyinterp.cli.main import main

STORIES = Path(__file__).resolve().parents[1] / "golden" / "stories.txt"


@pytest.mark.slow
def test_analyze_writes_every_file(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "a"
    rc = main(["analyze", str(tiny_ckpt), "--corpus", str(STORIES), "--out", str(out), "--max-stories", "30"])
    assert rc == 0, capsys.readouterr().err
    for name in ("heads.json", "heads.csv", "neurons.json", "neurons.csv", "probes.json", "sparse_probes.json", "summary.json",
                 "report.html", "ablation.json", "neurons_summary.json"):
        assert (out / name).exists(), name
    heads = json.loads((out / "heads.json").read_text())
    assert len(heads) == 4 and {"layer", "head", "label", "positional_r2", "content_js"} <= set(heads[0])
    neurons = json.loads((out / "neurons.json").read_text())
    assert all({"layer", "neuron", "tag", "category", "reasons", "auroc", "auroc_ci", "q_value"} <= set(n) for n in neurons)
    html = (out / "report.html").read_text()
    assert "<script" in html and "cdn.plot.ly" not in html.split("<body>")[0]  # plotly inlined, no CDN
    summary = json.loads((out / "summary.json").read_text())
    assert summary["corpus"]["stories"] == 30 and sum(summary["heads"].values()) == 4
    assert "k-sparse probes" in html and summary["sparse_probes"]
    # issue 12: output effects, two-axis labels, paper claim, halves
    axes = json.loads((out / "heads_axes.json").read_text())
    assert len(axes) == 4 and {"dla", "mean", "resample"} <= set(axes[0]["effects"])
    assert {"estimate", "ci_low", "ci_high"} <= set(axes[0]["effects"]["dla"]["FUNCTION"])
    assert summary["paper_claim"]["statement"] and summary["paper_claim"]["holds"] in (True, False, None)
    assert summary["label_agreement_halves"]["n_heads"] == 4
    assert "What each head produces" in html
    # one label: heads.json carries the axis label (the pattern rule only as pattern_label), as do the summary counts
    assert [h["label"] for h in heads] == [a["label"] for a in axes]
    assert all(h["pattern_label"] in ("local", "semantic", "sink", "mixed") and h["axes"]["positional"] for h in heads)
    assert {k: v for k, v in summary["heads"].items() if v} == summary["head_axes"]["labels"]
    # report: the claim table with CIs and the per-layer effect views (direct effect and ablation)
    assert "function − content" in html and "dla by next-token group, layer 0" in html
    assert "mean by next-token group, layer 0" in html
    assert {"head_ablation_s", "head_halves_s", "heads_and_neurons_s"} <= set(summary["timings"])
    # the decision: counts per category and tag, lexical baseline per tag, paper-form result, own timings
    ident = summary["neurons"]
    assert set(ident["categories_per_tag"]["NOUN"]) == {"pos", "token", "untestable", "none"} and ident["mode"] == "exact"
    assert "lookup" in summary["lexical_baseline"]["NOUN"] and "embedding" in summary["lexical_baseline"]["NOUN"]
    assert "per_tag" in ident["paper_specificity"] and "part of speech beyond token identity" in html
    assert {"neurons_identity_rules_s", "neurons_lexical_baselines_s"} <= set(summary["timings"])
    # the ablation: chosen on the selection half, run on the held-out half, matched random sets
    abl = json.loads((out / "ablation.json").read_text())
    assert abl and {"delta_target", "delta_off_target", "ratio", "ratio_ci", "p_random"} <= set(abl[0])
    sparse = json.loads((out / "sparse_probes.json").read_text())
    for tag, v in sparse.items():  # k grows to every neuron; each point is a held-out AUROC
        ks = [r["k"] for r in v["curve"]]
        assert ks == sorted(ks) and ks[-1] == summary["d_mlp"] * summary["n_layers"] and all(0.0 <= r["auroc"] <= 1.0 for r in v["curve"])


def test_no_head_effects_keeps_the_labels(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "nofx"
    rc = main(["analyze", str(tiny_ckpt), "--corpus", str(STORIES), "--out", str(out), "--max-stories", "12",
               "--no-neurons", "--no-probes", "--no-report", "--no-head-effects"])
    assert rc == 0, capsys.readouterr().err
    heads = json.loads((out / "heads.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert len(heads) == 4 and all(h["axes"]["positional"]["min_r2"] == 0.519 for h in heads)
    assert not (out / "heads_axes.json").exists() and "paper_claim" not in summary
    assert sum(summary["heads"].values()) == 4 and summary["config"]["heads"]["output_effects"] is False


def test_analyze_refuses_concurrent_writer(tiny_ckpt, tmp_path, capsys):
    from tinyinterp.analysis.results_io import folder_lock

    out = tmp_path / "busy"
    with folder_lock(out):
        rc = main(["analyze", str(tiny_ckpt), "--corpus", str(STORIES), "--out", str(out), "--max-stories", "5",
                   "--no-neurons", "--no-probes", "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2 and "another analysis is writing" in err


@pytest.mark.parametrize("kind", ["file", "under-a-file"])
def test_analyze_out_that_cannot_be_a_folder(tiny_ckpt, tmp_path, capsys, kind):
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    out = blocker if kind == "file" else blocker / "sub"
    rc = main(["analyze", str(tiny_ckpt), "--corpus", str(STORIES), "--out", str(out), "--max-stories", "5",
               "--no-neurons", "--no-probes", "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error:") and str(out) in err[-1] and "Traceback" not in "".join(err)
    assert blocker.read_text() == "keep me"
