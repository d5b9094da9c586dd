"""Bad-input suite, model side (issue 7): broken checkpoints, tokenizers and prompts.

Every case runs the command line and checks (a) one actionable line: exit status 2, stderr a
single ``error: …`` line naming the file or field and the fix, no traceback unless ``--debug``;
and (b) nothing on disk changed: the checkpoint's files are byte-identical afterwards.
The data and training side is in ``test_bad_inputs_data.py``.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support.stories import make_stories
from tests.robustness.bad_input_helpers import PickleTrap, cli, copy_ckpt, edit_config, error_line, tree
from tinyinterp.checkpoint import load_model, write_manifest
from tinyinterp.errors import CheckpointError


@pytest.fixture
def ckpt(tmp_path, tiny_ckpt):
    return copy_ckpt(tiny_ckpt, tmp_path / "ckpt")


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
    """A 300-id tokenizer: not the one the 384-id test model was trained with."""
    from tinyinterp.data.tokenizer import train_bpe

    return train_bpe(make_stories(60, seed=5), tmp_path_factory.mktemp("tok300") / "tok", vocab_size=300)


def _rewrite_weights(ckpt, fn, manifest: bool = True):
    sd = {k: v.clone() for k, v in load_file(str(ckpt / "model.safetensors")).items()}
    fn(sd)
    save_file(sd, str(ckpt / "model.safetensors"))
    if manifest:
        write_manifest(ckpt)


def _check_refused(capsys, ckpt, *patterns, cmd=("info",)):
    """Run CMD on the broken checkpoint: one error line matching patterns, files untouched."""
    before = tree(ckpt)
    line = error_line(*cli(capsys, cmd[0], ckpt, *cmd[1:]), *patterns)
    assert tree(ckpt) == before
    return line


# --- weights ------------------------------------------------------------------------------


def _truncate(c):
    data = (c / "model.safetensors").read_bytes()
    (c / "model.safetensors").write_bytes(data[: len(data) // 3])
    write_manifest(c)  # the manifest agrees: the loader itself must notice


def _garbage_header(c):
    data = bytearray((c / "model.safetensors").read_bytes())
    data[8:40] = b"\xde\xad\xbe\xef" * 8  # the JSON header after the 8-byte length
    (c / "model.safetensors").write_bytes(bytes(data))
    write_manifest(c)


def _bit_flips(c):
    data = bytearray((c / "model.safetensors").read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF  # tensor bytes: still parses, only the manifest can tell
    (c / "model.safetensors").write_bytes(bytes(data))


@pytest.mark.parametrize("damage,patterns", [
    (_truncate, ["model.safetensors", "corrupt or truncated", "re-save or re-download"]),
    (_garbage_header, ["model.safetensors", "corrupt or truncated", "re-save or re-download"]),
    (_bit_flips, ["model.safetensors", "sha256 does not match manifest.json", "restore it or load with --no-verify"]),
], ids=["truncated", "garbage-header", "bit-flips"])
def test_truncated_or_corrupted_weights(capsys, ckpt, damage, patterns):
    damage(ckpt)
    _check_refused(capsys, ckpt, *patterns, cmd=("generate", "--prompt", "Once", "--max-new-tokens", "2"))


@pytest.mark.parametrize("field,value,patterns", [
    ("d_mlp", 256, [r"blocks\.0\.mlp\.W_in has shape \(32, 128\) but config\.json implies \(32, 256\)", "disagree"]),
    ("n_layers", 2, [r"weights do not match config\.json \(missing \['blocks\.1\.", "different models"]),
    ("n_ctx", 128, [r"pos_embed\.W_pos has shape \(64, 32\) but config\.json implies \(128, 32\)"]),
])
def test_config_weights_shape_mismatch(capsys, ckpt, field, value, patterns):
    edit_config(ckpt, **{field: value})
    write_manifest(ckpt)
    _check_refused(capsys, ckpt, "model.safetensors", *patterns)


@pytest.mark.parametrize("convert,pattern", [
    (lambda sd: sd.update({k: v.double() for k, v in sd.items()}), r"has dtype torch\.float64; expected float32/float16/bfloat16"),
    (lambda sd: sd.update({"unembed.b_U": sd["unembed.b_U"].to(torch.int32)}), r"unembed\.b_U has dtype torch\.int32"),
], ids=["float64", "int32-bias"])
def test_wrong_dtype(capsys, ckpt, convert, pattern):
    _rewrite_weights(ckpt, convert)
    _check_refused(capsys, ckpt, "model.safetensors", pattern)


def test_fp16_weights_are_fine(capsys, ckpt):
    """The control for the dtype case: a float16 checkpoint (--save-dtype float16) loads."""
    _rewrite_weights(ckpt, lambda sd: sd.update({k: v.half() for k, v in sd.items() if v.is_floating_point() and v.dim()}))
    rc, _ = cli(capsys, "info", ckpt)
    assert rc == 0 and load_model(ckpt).W_E.dtype == torch.float32


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_nan_or_inf_weights(capsys, ckpt, value):
    _rewrite_weights(ckpt, lambda sd: sd["blocks.0.mlp.W_in"].__setitem__((3, 5), value))
    _check_refused(capsys, ckpt, r"model\.safetensors: blocks\.0\.mlp\.W_in contains NaN or inf", "broken",
                   cmd=("eval", "--data", ckpt / "README.md"))


# --- tokenizer ----------------------------------------------------------------------------


def test_tokenizer_vocab_differs_from_d_vocab(capsys, ckpt, small_tokenizer):
    for f in small_tokenizer.iterdir():  # someone copied the wrong tokenizer in
        (ckpt / f.name).write_bytes(f.read_bytes())
    write_manifest(ckpt)
    _check_refused(capsys, ckpt, "tokenizer has 300 ids but config.json says d_vocab=384",
                   "use the tokenizer the model was trained with", cmd=("generate", "--prompt", "Once"))


def test_missing_tokenizer(capsys, ckpt):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (ckpt / name).exists():
            (ckpt / name).unlink()
    write_manifest(ckpt)
    _check_refused(capsys, ckpt, str(ckpt), "tokenizer missing or unreadable", "copy the tokenizer files into the checkpoint")


def test_unreadable_tokenizer(capsys, ckpt):
    (ckpt / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    write_manifest(ckpt)
    _check_refused(capsys, ckpt, "tokenizer missing or unreadable", "cannot load tokenizer", "copy the tokenizer files")


# --- pickles are refused, never unpickled -------------------------------------------------


def test_pickle_in_place_of_weights_is_never_unpickled(capsys, ckpt, tmp_path):
    trap = tmp_path / "unpickled"
    (ckpt / "model.safetensors").unlink()
    torch.save({"embed.W_E": PickleTrap(str(trap))}, ckpt / "model.safetensors")  # a .pt renamed
    write_manifest(ckpt)
    _check_refused(capsys, ckpt, r"model\.safetensors: is a PyTorch pickle, not safetensors", "never loaded")
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(ckpt)
    assert not trap.exists()


def test_pickle_checkpoint_file_or_folder(capsys, ckpt, tmp_path):
    trap = tmp_path / "unpickled"
    (ckpt / "model.safetensors").unlink()
    with open(ckpt / "model.pt", "wb") as fh:
        pickle.dump(PickleTrap(str(trap)), fh)
    write_manifest(ckpt)
    _check_refused(capsys, ckpt, r"missing weights file \(found \['model\.pt'\]: pickle files are never loaded")
    _check_refused(capsys, ckpt / "model.pt", "is a file; pass the checkpoint folder", cmd=("generate", "--prompt", "a"))
    assert not trap.exists()


# --- config.json and the manifest ---------------------------------------------------------


@pytest.mark.parametrize("mutate,patterns", [
    (lambda c: (c / "config.json").write_text("{not json"), ["config.json: invalid JSON", "restore the file"]),
    (lambda c: (c / "config.json").write_text(""), ["config.json: invalid JSON"]),
    (lambda c: (c / "config.json").write_text("[1, 2, 3]"), ["config.json: expected a JSON object"]),
    (lambda c: edit_config(c, d_model="big"), [r"config\.json: field d_model='big' must be a positive integer", "restore the file"]),
    (lambda c: edit_config(c, n_heads=0), [r"config\.json: field n_heads=0 must be a positive integer"]),
], ids=["syntax", "empty", "list", "d_model-str", "n_heads-0"])
def test_malformed_config_json(capsys, ckpt, mutate, patterns):
    mutate(ckpt)
    write_manifest(ckpt)
    _check_refused(capsys, ckpt, *patterns)


def test_unknown_config_field(capsys, ckpt):
    edit_config(ckpt, n_layerz=3)
    write_manifest(ckpt)
    _check_refused(capsys, ckpt, r"config\.json: unknown field\(s\) \['n_layerz'\]", "remove them")


def test_checksum_mismatch_and_no_verify(capsys, ckpt):
    edit_config(ckpt, eps=1e-6)  # edited by hand; the manifest still has the old sum
    _check_refused(capsys, ckpt, r"config\.json: sha256 does not match manifest\.json", "--no-verify")
    before = tree(ckpt)
    rc, _ = cli(capsys, "info", "--no-verify", ckpt)  # the user's explicit choice: load anyway
    assert rc == 0 and tree(ckpt) == before
    assert load_model(ckpt, verify=False).cfg.eps == 1e-6


def test_unreadable_manifest(capsys, ckpt):
    (ckpt / "manifest.json").write_text("{")
    _check_refused(capsys, ckpt, r"manifest\.json: unreadable manifest", "--no-verify")
    assert cli(capsys, "info", "--no-verify", ckpt)[0] == 0


def test_not_a_checkpoint(capsys, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    _check_refused(capsys, folder, "not a tinyinterp checkpoint", "pass a folder written by `tinyinterp train`")
    _check_refused(capsys, tmp_path / "nope", "no such checkpoint folder")
    assert not (tmp_path / "nope").exists()


# --- prompts and generation settings ------------------------------------------------------


def test_prompt_longer_than_context(capsys, ckpt):
    """TransformerLens truncates a too-long *string* in to_tokens and fails with an IndexError
    in generate(); a continuation of a truncated prompt is not a continuation of the prompt, so
    tinyinterp refuses clearly, and a prompt that fits exactly still generates (the context
    window slides over the new tokens)."""
    import tinyinterp

    long_prompt = "Once upon a time " * 40
    _check_refused(capsys, ckpt, r"prompt is \d+ tokens \(with BOS\) but the model's context is 64; shorten the prompt",
                   cmd=("generate", "--prompt", long_prompt))
    model = load_model(ckpt)
    with pytest.raises(tinyinterp.TinyInterpError, match="context is 64"):
        tinyinterp.generate_text(model, long_prompt)
    ids = model.tokenizer(long_prompt, add_special_tokens=False)["input_ids"][:63]  # + BOS = 64 = n_ctx
    fits = model.tokenizer.decode(ids)
    assert len(model.tokenizer(fits, add_special_tokens=False)["input_ids"]) == 63
    out = tinyinterp.generate_text(model, fits, max_new_tokens=5)
    assert out.startswith(fits) and len(model.tokenizer(out, add_special_tokens=False)["input_ids"]) > 63


@pytest.mark.parametrize("flags,patterns", [
    (["--temperature", "-1"], [r"temperature=-1\.0: must be >= 0"]),
    (["--temperature", "nan"], [r"temperature=nan: must be >= 0"]),
    (["--max-new-tokens", "-5"], [r"--max-new-tokens=-5: must be >= 0"]),
    (["--top-k", "0"], [r"--top-k=0: must be > 0"]),
], ids=["temperature-neg", "temperature-nan", "max-new-tokens", "top-k"])
def test_bad_generation_settings(capsys, ckpt, flags, patterns):
    _check_refused(capsys, ckpt, *patterns, cmd=("generate", "--prompt", "Once", "--temperature", "0.5", *flags))


# --- --debug ------------------------------------------------------------------------------


def test_traceback_only_with_debug(capsys, ckpt):
    _truncate(ckpt)
    line = _check_refused(capsys, ckpt)  # no traceback without --debug (checked inside)
    rc, err = cli(capsys, "--debug", "info", ckpt)
    assert rc == 2 and err.count("Traceback (most recent call last)") == 1
    assert "CheckpointError" in err and err.strip().splitlines()[-1] == line  # the same line, last


def test_one_line_in_a_real_process(ckpt):
    """Outside pytest's capture: a real `tinyinterp` process prints the one line and nothing else."""
    edit_config(ckpt, d_mlp=256)
    write_manifest(ckpt)
    env = {**os.environ, "TINYINTERP_CACHE": str(ckpt.parent / "cache")}
    r = subprocess.run([sys.executable, "-m", "tinyinterp", "info", str(ckpt)], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "config.json implies" in r.stderr, r.stderr
