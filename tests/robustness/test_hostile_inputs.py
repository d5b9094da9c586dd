"""Issue 17, items 3, 4, 5, 8, 9, 11: files built to hang, exhaust memory, run code or silently
change results, and ~20 mistakes that used to end in "unexpected …" with status 1.

Same contract as test_bad_inputs*.py: exit status 2, one ``error:`` line naming the file or field
and the fix, no traceback, and the inputs byte for byte as they were.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.robustness.bad_input_helpers import PickleTrap, cli, copy_ckpt, edit_config, error_line, tree
from tinyinterp.checkpoint import write_manifest


@pytest.fixture
def ckpt(tmp_path, tiny_ckpt):
    return copy_ckpt(tiny_ckpt, tmp_path / "ckpt")


def _refused(capsys, ckpt, *patterns, cmd=("info",)):
    before = tree(ckpt)
    line = error_line(*cli(capsys, cmd[0], ckpt, *cmd[1:]), *patterns)
    assert tree(ckpt) == before
    return line


# --- 3: absurd shapes are refused before anything is allocated ----------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("field,value,patterns", [
    ("n_layers", 100000, [r"field n_layers=100000 must be a positive integer \(at most 1,024\)"]),
    ("n_ctx", 1e7, [r"field n_ctx=10000000\.0 must be a positive integer"]),
    ("d_model", 10**9, [r"field d_model=1000000000 must be a positive integer"]),
    ("n_ctx", 60000, [r"pos_embed\.W_pos has shape \(64, 32\) but config\.json implies \(60000, 32\)"]),
    ("d_mlp", 200000, [r"blocks\.0\.mlp\.W_in has shape \(32, 128\) but config\.json implies \(32, 200000\)"]),
], ids=["n_layers", "n_ctx-float", "d_model", "n_ctx-header", "d_mlp-header"])
def test_absurd_shapes_refused_before_allocation(capsys, ckpt, field, value, patterns):
    edit_config(ckpt, **{field: value})
    write_manifest(ckpt)
    _refused(capsys, ckpt, "config.json|model.safetensors", *patterns)


def test_shape_larger_than_memory(capsys, ckpt, monkeypatch):
    from tinyinterp.models import config

    monkeypatch.setattr(config, "physical_memory", lambda: 1 << 10)  # a 1 KiB machine
    _refused(capsys, ckpt, r"needs 0\.0 GiB|needs [\d.]+ GiB for the weights alone, more than this machine's")


def test_weight_shapes_match_transformer_lens():
    """ModelConfig.weight_shapes (the header check) is exactly HookedTransformer's state dict."""
    from transformer_lens import HookedTransformer

    from tinyinterp.models.hooked import hooked_config
    from tinyinterp.models.presets import preset_model_config

    mc = preset_model_config("micro", d_vocab=50, n_layers=2, d_vocab_out=40)
    got = {k: tuple(v.shape) for k, v in HookedTransformer(hooked_config(mc), move_to_device=False).state_dict().items()}
    assert got == mc.weight_shapes()


# --- 4: only regular files inside the folder, bounded reads -------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "../outside.txt", "/etc/hostname"])
def test_manifest_entries_outside_or_endless(capsys, ckpt, target):
    if target == "fifo":
        os.mkfifo(ckpt / "fifo")
    else:
        (ckpt.parent / "outside.txt").write_text("secret")
    sums = json.loads((ckpt / "manifest.json").read_text())
    sums["sha256"][target] = "0" * 64
    (ckpt / "manifest.json").write_text(json.dumps(sums))
    pattern = {"fifo": r"fifo: is a FIFO, not a regular file"}.get(target, "is not a plain file name inside the folder")
    _refused(capsys, ckpt, "manifest.json entry" if target != "fifo" else "only regular files", pattern)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["config.json", "manifest.json", "tokenizer.json", "model.safetensors"])
def test_symlink_to_dev_zero(capsys, ckpt, name):
    (ckpt / name).unlink()
    (ckpt / name).symlink_to("/dev/zero")
    _refused(capsys, ckpt, rf"{name}: points outside", "only files inside the folder are read")


@pytest.mark.timeout(60)
def test_oversized_config_json(capsys, ckpt):
    (ckpt / "config.json").write_text(" " * (2 << 20) + "{}")
    _refused(capsys, ckpt, r"config\.json: [\d,]+ bytes is larger than", "restore the original file")


@pytest.fixture
def hf_dir(tmp_path, tiny_ckpt):
    from tinyinterp.models.hf_export import export_hf

    return export_hf(tiny_ckpt, tmp_path / "hf", check=False).out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shard", ["../fifo", "../w.safetensors", "/dev/zero"])
def test_hf_index_points_outside(capsys, tmp_path, hf_dir, shard):
    os.mkfifo(tmp_path / "fifo")
    os.replace(hf_dir / "model.safetensors", tmp_path / "w.safetensors")
    keys = load_file(str(tmp_path / "w.safetensors")).keys()
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: shard for k in keys}}))
    _refused(capsys, hf_dir, r"weight_map shard name .* is not a plain file name inside the folder")


@pytest.mark.parametrize("index,pattern", [
    ({"weight_map": []}, "no weight_map of tensor name -> shard file"),
    ({"weight_map": {"a": 3}}, "no weight_map of tensor name -> shard file"),
    ([1, 2], "no weight_map"),
], ids=["list", "int-shard", "not-object"])
def test_bad_weight_map(capsys, hf_dir, index, pattern):
    (hf_dir / "model.safetensors").unlink()
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    _refused(capsys, hf_dir, r"model\.safetensors\.index\.json", pattern)


def test_raw_pickle_bin_in_hf_folder(capsys, hf_dir, tmp_path):
    (hf_dir / "model.safetensors").unlink()
    trap = tmp_path / "unpickled"
    with open(hf_dir / "pytorch_model.bin", "wb") as fh:
        pickle.dump(PickleTrap(str(trap)), fh)
    line = _refused(capsys, hf_dir, r"pytorch_model\.bin: unreadable weights", "tensors only")
    assert "\x1b[" not in line and not trap.exists()


# --- 5: a tokenizer never runs the folder's code ------------------------------------------


def test_tokenizer_auto_map_is_refused(capsys, ckpt, tmp_path):
    trap = tmp_path / "ran"
    (ckpt / "my_tok.py").write_text(f"open({str(trap)!r}, 'w').write('pwned')\nclass MyTok: pass\n")
    cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["my_tok.MyTok", None]}
    (ckpt / "tokenizer_config.json").write_text(json.dumps(cfg))
    write_manifest(ckpt)
    _refused(capsys, ckpt, r"tokenizer_config\.json: asks to run Python code shipped with the folder \(auto_map\)",
             "never runs")
    assert not trap.exists()


# --- 8: generation settings, resume shape, token ids ---------------------------------------


@pytest.mark.parametrize("flags,patterns", [
    ([], [r"max_new_tokens=200: the prompt \(\d+ tokens with BOS\) plus the new tokens exceed the model's context of 64",
          r"--max-new-tokens \d+ or less"]),
    (["--max-new-tokens", "8", "--temperature", "-1"], [r"temperature=-1\.0: must be >= 0"]),
    (["--max-new-tokens", "8", "--seed", str(2**70)], [r"seed=\d+: must be in \[0, 2\*\*63\)"]),
], ids=["context", "temperature", "seed"])
def test_sample_settings(capsys, ckpt, tmp_path, flags, patterns):
    out = tmp_path / "s.txt"
    _refused(capsys, ckpt, *patterns, cmd=("sample", "--n", "2", "--out", out, *flags))
    assert not out.exists()


def test_sample_out_is_a_folder(capsys, ckpt, tmp_path):
    _refused(capsys, ckpt, r"--out .*: is a folder; pass the \.txt file to write", cmd=("sample", "--out", tmp_path))


def test_generate_seed_out_of_range(capsys, ckpt):
    _refused(capsys, ckpt, r"seed=\d+: must be in \[0, 2\*\*63\)", cmd=("generate", "--prompt", "a", "--seed", str(2**70)))


def test_resume_with_another_shape(capsys, tmp_path, tiny_ckpt):
    run = copy_ckpt(tiny_ckpt, tmp_path / "run", run=True)
    before = tree(run)
    error_line(*cli(capsys, "train", "--out", run, "--resume", "--max-steps", "70", "--model-config", '{"d_mlp": 64}'),
               "resume state holds a model of another shape", "original --preset/--model-config|--overwrite")
    assert tree(run) == before


def test_token_ids_beyond_d_vocab(capsys, ckpt):
    tj = json.loads((ckpt / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    last = max(vocab, key=vocab.get)
    vocab[last] = 5000  # same count of ids, one of them beyond the 384 embedding rows
    (ckpt / "tokenizer.json").write_text(json.dumps(tj))
    write_manifest(ckpt)
    _refused(capsys, ckpt, r"token id 5000 .* but the model has d_vocab=384", "use the tokenizer the model was trained with")


# --- 9: silent wrong results --------------------------------------------------------------


def test_ignore_buffer_edited(capsys, ckpt):
    """IGNORE = 0 instead of -inf lets every position see the future; it must not load."""
    sd = {k: v.clone() for k, v in load_file(str(ckpt / "model.safetensors")).items()}
    sd["blocks.0.attn.IGNORE"] = torch.tensor(0.0)
    save_file(sd, str(ckpt / "model.safetensors"))
    write_manifest(ckpt)
    _refused(capsys, ckpt, r"buffer blocks\.0\.attn\.IGNORE differs from what config\.json implies", "restore it")


@pytest.mark.parametrize("value", [-1, float("nan"), "abc", 0, True], ids=["neg", "nan", "str", "zero", "bool"])
def test_eps_out_of_range(capsys, ckpt, value):
    edit_config(ckpt, eps=value)
    write_manifest(ckpt)
    _refused(capsys, ckpt, r"config\.json: field eps=.* must be a number in \(0, 1\)")


@pytest.mark.parametrize("field,value,pattern", [
    ("use_attn_scale", "yes", "must be true or false"),
    ("act_fn", "tanh", "use one of gelu_new"),
    ("attn_types", ["global", "sideways"], "must list 'global' or 'local' for each"),
    ("model_name", 7, "must be a string"),
    ("dtype", "float64", r"unknown field\(s\) \['dtype'\]"),
], ids=["bool", "act_fn", "attn_types", "model_name", "dtype"])
def test_every_config_field_typed(capsys, ckpt, field, value, pattern):
    edit_config(ckpt, **{field: value})
    write_manifest(ckpt)
    _refused(capsys, ckpt, r"config\.json", pattern)


# --- 11: one line and status 2 instead of "unexpected …" ---------------------------------


@pytest.mark.parametrize("text,patterns", [
    (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', [r"\.jsonl:2: not valid UTF-8", "iconv"]),
    (b"[" * 100000 + b"]" * 100000 + b"\n", [r"\.jsonl:1: JSON nested too deeply"]),
    (b'{"text": ' + b"9" * 5000 + b"}\n", [r"\.jsonl:1: invalid JSON \(Exceeds the limit"]),
], ids=["utf8", "nested", "big-int"])
def test_bad_jsonl(capsys, tmp_path, text, patterns):
    f = tmp_path / "c.jsonl"
    f.write_bytes(text)
    error_line(*cli(capsys, "tokenizer", "--data", f, "--out", tmp_path / "tok"), *patterns)
    assert not (tmp_path / "tok").exists()


@pytest.mark.parametrize("content,patterns", [
    ("[" * 100000 + "]" * 100000, [r"config\.json: JSON nested too deeply"]),
    ('{"n_layers": ' + "1" * 5000 + "}", [r"config\.json: invalid JSON \(Exceeds the limit"]),
    (b"\xff\xfe{}", [r"config\.json: not valid UTF-8"]),
], ids=["nested", "big-int", "utf8"])
def test_bad_config_json_text(capsys, ckpt, content, patterns):
    p = ckpt / "config.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    write_manifest(ckpt)
    _refused(capsys, ckpt, *patterns)


@pytest.mark.parametrize("manifest", [{"sha256": {"config.json": 5}}, {"sha256": []}, [1]], ids=["int", "list", "top-list"])
def test_manifest_wrong_types(capsys, ckpt, manifest):
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    _refused(capsys, ckpt, r"manifest\.json: unreadable manifest", "--no-verify")


def test_invalid_training_json_in_info(capsys, ckpt):
    (ckpt / "training.json").write_text("[1, 2")
    _refused(capsys, ckpt, r"training\.json: invalid JSON", cmd=("info", "--no-verify"))
    (ckpt / "training.json").write_text("[1, 2]")
    _refused(capsys, ckpt, r"training\.json: expected a JSON object", cmd=("info", "--no-verify"))


@pytest.mark.parametrize("device", ["cuda", "bogus", "meta", "cuda:7"])
def test_device_not_on_this_machine(capsys, ckpt, corpus_files, tmp_path, device):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    pattern = r"--device (cuda|bogus|meta)\S*: (this machine has no CUDA GPU|not a device tinyinterp can run on)"
    _refused(capsys, ckpt, pattern, cmd=("eval", "--data", corpus_files["eval"], "--device", device))
    error_line(*cli(capsys, "train", "--preset", "micro", "--data", corpus_files["train"], "--out", tmp_path / "r",
                    "--max-steps", "2", "--device", device), r"device (cuda|bogus|meta)")
    assert not (tmp_path / "r").exists()


def test_seed_out_of_range_in_train(capsys, corpus_files, tmp_path):
    error_line(*cli(capsys, "train", "--preset", "micro", "--data", corpus_files["train"], "--out", tmp_path / "r",
                    "--max-steps", "2", "--seed", str(2**70)), r"seed=\d+: out of range; must be in \[0, 2\*\*63\)")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("kind", ["file", "devnull", "read-only"])
def test_cache_env_unusable(capsys, tmp_path, corpus_files, monkeypatch, kind):
    if kind == "file":
        target = tmp_path / "cachefile"
        target.write_text("x")
    elif kind == "devnull":
        target = "/dev/null"
    else:
        target = tmp_path / "ro"
        target.mkdir()
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **k: False if str(p).startswith(str(target)) else real(p, m, **k))
    monkeypatch.setenv("TINYINTERP_CACHE", str(target))
    error_line(*cli(capsys, "train", "--preset", "micro", "--data", corpus_files["train"], "--out", tmp_path / "r",
                    "--max-steps", "2", "--vocab-size", "300"),
               r"cache folder .* \(TINYINTERP_CACHE\): (cannot create it|not writable)", "point TINYINTERP_CACHE at")
    assert not (tmp_path / "r").exists()


@pytest.mark.timeout(60)
def test_fifo_corpus(capsys, tmp_path):
    os.mkfifo(tmp_path / "c.txt")
    error_line(*cli(capsys, "tokenizer", "--data", tmp_path / "c.txt", "--out", tmp_path / "tok"),
               r"c\.txt: is a FIFO, not a regular file")


def test_unreadable_corpus(capsys, tmp_path, corpus_files, monkeypatch):
    """As root every file is readable, so the denial is simulated where the corpus is first opened."""
    from tinyinterp.data import readers

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(readers, "sha256_file", denied)
    error_line(*cli(capsys, "prepare", "--data", corpus_files["train"], "--tokenizer", corpus_files["dir"],
                    "--out", tmp_path / "p"), r"train\.txt: permission denied; make it readable")


@pytest.mark.parametrize("command", ["train", "export-hf", "prepare", "tokenizer", "sample"])
def test_read_only_out(capsys, tmp_path, tiny_ckpt, tokenizer_dir, corpus_files, monkeypatch, command):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if str(p).startswith(str(ro)) else real(p, m, **k))
    out = ro / ("s.txt" if command == "sample" else "out")
    args = {
        "train": ["train", "--preset", "micro", "--data", corpus_files["train"], "--out", out, "--max-steps", "2"],
        "export-hf": ["export-hf", tiny_ckpt, out],
        "prepare": ["prepare", "--data", corpus_files["train"], "--tokenizer", tokenizer_dir, "--out", out],
        "tokenizer": ["tokenizer", "--data", corpus_files["train"], "--out", out, "--vocab-size", "300"],
        "sample": ["sample", tiny_ckpt, "--out", out, "--n", "1", "--max-new-tokens", "4"],
    }[command]
    error_line(*cli(capsys, *args), r"(is not writable|permission denied)", "choose")
    assert list(ro.iterdir()) == []


def test_permission_error_anywhere_is_one_line(capsys, ckpt, monkeypatch):
    """The last line of defence: a PermissionError from any library call (an unreadable weights file,
    a read-only run folder on --resume) is one line with the file, status 2."""
    import tinyinterp.checkpoint as checkpoint

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint, "read_weights", lambda c: denied(c / "model.safetensors"))
    _refused(capsys, ckpt, r"model\.safetensors: permission denied", "chmod")
