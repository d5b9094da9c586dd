"""Issue 17, items 1, 2, 6, 7 (checkpoints): commands that write a folder never destroy what they
did not write, take one writer at a time, and a killed run's folder is mended by a rerun.

The rule (tinyinterp/output_folder.py): a non-empty folder is written only when the same command
wrote it before (its marker file), never a folder that holds or lies inside an input, and
``--overwrite`` replaces only the files the marker lists. Every refusal is one ``error:`` line,
exit status 2, and leaves every bystander file byte for byte as it was.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.robustness.bad_input_helpers import cli, copy_ckpt, error_line, tree
from tinyinterp.checkpoint import SAVING, load_model
from tinyinterp.output_folder import MARKER, STAGING_PREFIX, folder_lock


@pytest.fixture
def bystander(tmp_path):
    """A folder of someone's own work: must survive every refused command byte for byte."""
    d = tmp_path / "thesis"
    d.mkdir()
    (d / "t.tex").write_text("\\section{Results}\n")
    (d / "data.csv").write_bytes(b"a,b\n1,2\n")
    return d


def _tok_args(corpus, out, *extra):
    return ["tokenizer", "--data", corpus, "--out", out, "--vocab-size", "300", *extra]


@pytest.mark.parametrize("flags", [[], ["--overwrite"]], ids=["plain", "overwrite"])
@pytest.mark.parametrize("command", ["tokenizer", "prepare", "export-hf", "train"])
def test_foreign_folder_is_refused(capsys, bystander, corpus_files, tokenizer_dir, tiny_ckpt, command, flags):
    before = tree(bystander)
    args = {
        "tokenizer": _tok_args(corpus_files["train"], bystander),
        "prepare": ["prepare", "--data", corpus_files["train"], "--tokenizer", tokenizer_dir, "--out", bystander],
        "export-hf": ["export-hf", tiny_ckpt, bystander],
        "train": ["train", "--preset", "micro", "--data", corpus_files["train"], "--out", bystander,
                  "--max-steps", "2", "--vocab-size", "384"],
    }[command]
    error_line(*cli(capsys, *args, *flags), str(bystander), f"not written by `tinyinterp {command}`",
               "nothing was changed", "choose a new or empty folder")
    assert tree(bystander) == before


def test_tokenizer_refuses_a_checkpoint_and_the_corpus_folder(capsys, tmp_path, tiny_ckpt, corpus_files, monkeypatch):
    ck = copy_ckpt(tiny_ckpt, tmp_path / "ck")
    before = tree(ck)
    error_line(*cli(capsys, *_tok_args(corpus_files["train"], ck, "--overwrite")), "holds the output of `tinyinterp train`",
               "nothing was changed")
    assert tree(ck) == before
    work = tmp_path / "work"  # `cd dir; tinyinterp tokenizer --data stories.txt --out .` deleted the corpus
    work.mkdir()
    (work / "stories.txt").write_bytes(corpus_files["train"].read_bytes())
    before = tree(work)
    monkeypatch.chdir(work)
    error_line(*cli(capsys, *_tok_args("stories.txt", ".", "--overwrite")), r"\.: holds the input stories\.txt",
               "choose an output folder outside the inputs")
    assert tree(work) == before


def test_prepare_refuses_output_inside_an_input_folder(capsys, tmp_path, corpus_files, tokenizer_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(corpus_files["train"].read_bytes())
    before = tree(corpus)
    error_line(*cli(capsys, "prepare", "--data", corpus, "--tokenizer", tokenizer_dir, "--out", corpus / "prepared"),
               "lies inside the input folder", "outside the inputs")
    error_line(*cli(capsys, "prepare", "--data", corpus / "a.txt", "--tokenizer", tokenizer_dir, "--out", corpus),
               "holds the input")
    assert tree(corpus) == before


def test_export_hf_never_deletes_its_source(capsys, tmp_path, tiny_ckpt, monkeypatch):
    """`export-hf p/ck p --overwrite` deleted the source checkpoint and its siblings."""
    p = tmp_path / "p"
    p.mkdir()
    copy_ckpt(tiny_ckpt, p / "ck")
    (p / "sibling.txt").write_text("keep me")
    before = tree(p)
    error_line(*cli(capsys, "export-hf", p / "ck", p, "--overwrite"), "holds the input", "outside the inputs")
    error_line(*cli(capsys, "export-hf", p / "ck", p / "ck" / "hf", "--overwrite"), "lies inside the input folder")
    monkeypatch.chdir(p)  # `export-hf CK .` exited 1 with "unexpected ValueError"
    error_line(*cli(capsys, "export-hf", "ck", "."), "holds the input")
    assert tree(p) == before


def test_overwrite_replaces_only_own_files(capsys, tmp_path, corpus_files, tokenizer_dir, stories):
    out = tmp_path / "tok"
    assert cli(capsys, *_tok_args(corpus_files["train"], out))[0] == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker == {"command": "tokenizer", "files": ["tokenizer.json", "tokenizer_config.json"], "complete": True}
    (out / "notes.md").write_text("mine")
    error_line(*cli(capsys, *_tok_args(corpus_files["train"], out)), "already holds a tokenizer", "pass --overwrite")
    assert cli(capsys, *_tok_args(corpus_files["train"], out, "--overwrite"))[0] == 0
    assert (out / "notes.md").read_text() == "mine"

    data = tmp_path / "data"
    assert cli(capsys, "prepare", "--data", corpus_files["train"], "--tokenizer", tokenizer_dir, "--out", data)[0] == 0
    (data / "README").write_text("my notes")
    small = tmp_path / "small.txt"
    small.write_text("\n<|endoftext|>\n".join(stories[:30]))
    error_line(*cli(capsys, "prepare", "--data", small, "--tokenizer", tokenizer_dir, "--out", data),
               "already holds a prepared-data folder", "--overwrite")
    assert cli(capsys, "prepare", "--data", small, "--tokenizer", tokenizer_dir, "--out", data, "--overwrite")[0] == 0
    meta = json.loads((data / "meta.json").read_text())
    assert meta["sources"]["train"][0]["path"] == str(small) and (data / "README").read_text() == "my notes"
    assert sorted(json.loads((data / MARKER).read_text())["files"]) == sorted(
        ["meta.json", *meta["splits"]["train"]["files"], *meta["splits"]["val"]["files"]])


def test_interrupted_output_is_refused_then_mended(capsys, tmp_path, corpus_files):
    """A kill while files are moved in leaves marker ``complete: false`` (and maybe a staging folder):
    readers refuse the folder; rerunning the same command finishes it, without --overwrite."""
    from tinyinterp.data.tokenizer import load_tokenizer
    from tinyinterp.errors import TinyInterpError

    out = tmp_path / "tok"
    assert cli(capsys, *_tok_args(corpus_files["train"], out))[0] == 0
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "complete": False}))
    (out / (STAGING_PREFIX + "x")).mkdir()
    (out / (STAGING_PREFIX + "x") / "tokenizer.json").write_text("{half")
    with pytest.raises(TinyInterpError, match="writing it was interrupted.*rerun that command"):
        load_tokenizer(out)
    assert cli(capsys, *_tok_args(corpus_files["train"], out))[0] == 0
    assert json.loads((out / MARKER).read_text())["complete"] is True
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "tokenizer.json", "tokenizer_config.json"]
    load_tokenizer(out)


@pytest.mark.parametrize("command", ["tokenizer", "prepare", "export-hf", "train"])
def test_help_states_the_rule(capsys, command):
    from tinyinterp.cli.main import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--overwrite" in text and ("only the files" in text) and ("input" in text), text


def test_one_writer_per_folder(capsys, tmp_path, corpus_files):
    """Two `train` runs on one --out both "succeeded" and interleaved metrics.jsonl: the second is refused."""
    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out, "another run"):
        error_line(*cli(capsys, "train", "--preset", "micro", "--data", corpus_files["train"], "--out", out,
                        "--max-steps", "2", "--vocab-size", "384"),
                   "another tinyinterp process is writing this folder", "wait for it")
        error_line(*cli(capsys, *_tok_args(corpus_files["train"], out)), "another tinyinterp process")
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_checkpoint_save_killed_between_renames(capsys, tmp_path, tiny_ckpt):
    """New weights beside the old manifest: the message says --resume (not --no-verify); --resume
    rewrites the checkpoint and removes the stray temporary files a kill left."""
    run = copy_ckpt(tiny_ckpt, tmp_path / "run", run=True)
    sd = load_file(str(run / "model.safetensors"))
    sd["embed.W_E"] = sd["embed.W_E"] + 0.01  # "the next step's" weights, renamed in before the manifest
    save_file(sd, str(run / "model.safetensors"))
    (run / SAVING).write_bytes(b"")
    (run / ".config.json.abc123.tinyinterp.tmp").write_text("{")  # staged, never renamed
    (run / ".resume-xyz").mkdir()
    before = tree(run)
    error_line(*cli(capsys, "info", run), "a save was interrupted", "rerun the training with --resume")
    assert tree(run) == before
    step = json.loads((run / "training.json").read_text())["step"]
    rc, err = cli(capsys, "train", "--out", run, "--resume", "--max-steps", str(step + 2))
    assert rc == 0, err
    assert not (run / SAVING).exists() and not list(run.glob(".*.tmp")) and not list(run.glob(".resume-*"))
    model = load_model(run)
    assert json.loads((run / "training.json").read_text())["step"] == step + 2
    assert torch.isfinite(model.W_E).all()
