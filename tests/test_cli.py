"""Integration through the command line (in-process main() and real subprocesses)."""

import json
import subprocess
import sys

import pytest

from tinyinterp.cli.main import main


def test_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "tinyinterp", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("train", "eval", "generate", "info", "presets", "tokenizer", "prepare"):
        assert cmd in r.stdout
    r = subprocess.run([sys.executable, "-m", "tinyinterp", "train", "--help"], capture_output=True, text=True)
    assert "--max-steps" in r.stdout and "--resume" in r.stdout and "Peak learning rate" in r.stdout


def test_train_eval_generate_roundtrip(tmp_path, corpus_files, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--preset", "micro", "--data", str(corpus_files["train"]), "--out", str(out),
               "--max-steps", "20", "--vocab-size", "384", "--batch-size", "4", "--eval-every", "10"])
    assert rc == 0
    import tinyinterp

    assert tinyinterp.load_model(out).cfg.n_layers == 1
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(corpus_files["eval"]), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) >= {"loss", "bits_per_byte", "tokens"} and 0 < res["bits_per_byte"] < 10
    assert main(["generate", str(out), "--prompt", "Once upon a time", "--max-new-tokens", "5", "--json"]) == 0
    g1 = json.loads(capsys.readouterr().out)
    assert main(["generate", str(out), "--prompt", "Once upon a time", "--max-new-tokens", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == g1 and g1[0]["text"].startswith("Once upon a time")
    info = json.loads((out / "training.json").read_text())
    assert info["command"].startswith("tinyinterp train") or info["command"]


def test_eval_matches_training_eval_convention(tiny_ckpt, corpus_files, capsys):
    """`tinyinterp eval` on the eval file gives the final in-training validation number."""
    assert main(["eval", str(tiny_ckpt), "--data", str(corpus_files["eval"]), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    final = json.loads((tiny_ckpt / "training.json").read_text())["final_eval"]
    assert res["bits_per_byte"] == pytest.approx(final["val_bpb"], rel=1e-5)
    assert res["tokens"] == final["val_tokens"]


@pytest.mark.parametrize("args,match", [
    (["train", "--preset", "nope", "--data", "x", "--out", "o", "--max-steps", "1"], None),  # argparse: exit 2
    (["train", "--data", "{train}", "--out", "{tmp}/o", "--max-steps", "1", "--lr", "0"], "lr=0"),
    (["train", "--data", "{train}", "--out", "{tmp}/o", "--max-steps", "0"], "max_steps"),
    (["train", "--data", "{train}", "--out", "{tmp}/o", "--max-steps", "5", "--batch-size", "-1"], "batch_size"),
    (["train", "--data", "{tmp}/empty.txt", "--out", "{tmp}/o", "--max-steps", "1"], "empty"),
    (["train", "--data", "{tmp}/missing.txt", "--out", "{tmp}/o", "--max-steps", "1"], "no such file"),
    (["train", "--data", "{train}", "--out", "{tmp}/o", "--max-steps", "1", "--model-config", "{{bad"], "invalid JSON"),
    (["train", "--data", "{train}", "--out", "{tmp}/o", "--max-steps", "1", "--model-config", '{{"act_fn": "tanhh"}}'], "act_fn"),
    (["generate", "{ckpt}", "--prompt", "{long}"], "longer|context"),
    (["generate", "{ckpt}", "--prompt", "hi", "--temperature", "-1"], "temperature"),
    (["eval", "{ckpt}", "--data", "{tmp}/binary.txt"], "binary"),
    (["eval", "{ckpt}", "--data", "{train}", "--batch-size", "0"], "batch-size"),
])
def test_user_errors_are_one_line(tmp_path, corpus_files, tiny_ckpt, capsys, args, match):
    (tmp_path / "empty.txt").write_text("  \n\n")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)))
    fmt = {"train": str(corpus_files["train"]), "tmp": str(tmp_path), "ckpt": str(tiny_ckpt),
           "long": "word " * 200}
    args = [a.format(**fmt) for a in args]
    if match is None:
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
        return
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    import re

    assert re.search(match, err[0]), err[0]


def test_presets_and_info(tiny_ckpt, capsys):
    assert main(["presets"]) == 0
    assert "ts-1m" in capsys.readouterr().out
    assert main(["info", str(tiny_ckpt)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["n_layers"] == 1 and info["step"] == 60
