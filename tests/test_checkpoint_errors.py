"""Bad checkpoints give one actionable line (library and CLI) and never execute code."""

import json
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from tinyinterp.checkpoint import load_model, write_manifest
from tinyinterp.cli.main import main
from tinyinterp.errors import CheckpointError


@pytest.fixture
def ckpt(tmp_path, tiny_ckpt):
    dst = tmp_path / "c"
    shutil.copytree(tiny_ckpt, dst, ignore=shutil.ignore_patterns("resume", "snapshots"))
    return dst


def _mutate_weights(ckpt, fn):
    sd = load_file(str(ckpt / "model.safetensors"))
    fn(sd)
    save_file(sd, str(ckpt / "model.safetensors"))
    write_manifest(ckpt)


def _truncate(c):
    data = (c / "model.safetensors").read_bytes()
    (c / "model.safetensors").write_bytes(data[: len(data) // 2])


def _garbage(c):
    (c / "model.safetensors").write_bytes(b"\x00" * 100)


def _shape(c):
    _mutate_weights(c, lambda sd: sd.__setitem__("embed.W_E", torch.zeros(10, 32)))


def _nan(c):
    _mutate_weights(c, lambda sd: sd["blocks.0.mlp.W_in"].__setitem__((0, 0), float("nan")))


def _dtype(c):
    _mutate_weights(c, lambda sd: sd.__setitem__("unembed.b_U", sd["unembed.b_U"].to(torch.int32)))


def _unknown_field(c):
    cfg = json.loads((c / "config.json").read_text())
    cfg["n_layerz"] = 3
    (c / "config.json").write_text(json.dumps(cfg))
    write_manifest(c)


def _vocab(c):
    cfg = json.loads((c / "config.json").read_text())
    cfg["d_vocab"] = 500
    (c / "config.json").write_text(json.dumps(cfg))
    write_manifest(c)


def _no_tokenizer(c):
    (c / "tokenizer.json").unlink()
    (c / "tokenizer_config.json").unlink()
    write_manifest(c)


def _bad_json(c):
    (c / "config.json").write_text("{not json")
    write_manifest(c)


def _tampered(c):
    cfg = json.loads((c / "config.json").read_text())
    cfg["eps"] = 1e-6
    (c / "config.json").write_text(json.dumps(cfg))  # manifest not updated


def _missing_weights(c):
    (c / "model.safetensors").unlink()
    write_manifest(c)


CASES = {
    "truncated": (_truncate, "corrupt or truncated|sha256"),
    "garbage": (_garbage, "corrupt or truncated|sha256"),
    "shape": (_shape, "shape"),
    "nan": (_nan, "NaN or inf"),
    "dtype": (_dtype, "dtype"),
    "unknown_field": (_unknown_field, "unknown field"),
    "vocab": (_vocab, "tokenizer has 384 ids"),
    "no_tokenizer": (_no_tokenizer, "tokenizer"),
    "bad_json": (_bad_json, "invalid JSON"),
    "tampered": (_tampered, "sha256 does not match"),
    "missing_weights": (_missing_weights, "missing"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_checkpoint_library_and_cli(ckpt, case, capsys):
    mutate, match = CASES[case]
    mutate(ckpt)
    before = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match=match):
        load_model(ckpt)
    rc = main(["eval", str(ckpt), "--data", str(ckpt / "README.md")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()} == before  # nothing damaged


def test_not_a_checkpoint(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope"), "--prompt", "hi"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), "--prompt", "hi"]) == 2
    assert "not a tinyinterp checkpoint" in capsys.readouterr().err


def test_no_verify_skips_checksums(ckpt):
    _tampered(ckpt)
    load_model(ckpt, verify=False)


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/tinyinterp-pwned", "w"))


def test_malicious_pickle_is_never_loaded(tmp_path, ckpt):
    import os

    (ckpt / "model.safetensors").unlink()
    with open(ckpt / "pytorch_model.bin", "wb") as fh:
        pickle.dump(_Boom(), fh)
    write_manifest(ckpt)
    if os.path.exists("/tmp/tinyinterp-pwned"):
        os.unlink("/tmp/tinyinterp-pwned")
    with pytest.raises(CheckpointError, match="pickle files are never loaded"):
        load_model(ckpt)
    assert not os.path.exists("/tmp/tinyinterp-pwned")


def test_cli_traceback_only_with_debug(ckpt):
    _truncate(ckpt)
    cmd = [sys.executable, "-m", "tinyinterp", "eval", str(ckpt), "--data", str(ckpt / "README.md")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "tinyinterp", "--debug"] + cmd[3:], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" in r.stderr
