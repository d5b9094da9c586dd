"""Bad-input suite, data and training side (issue 7): corpora, hyper-parameters, output folders,
a full disk, two analyses on one folder.

Every case runs the command line and checks (a) one actionable line (exit status 2, one
``error: …`` line naming the file or field and the fix, no traceback) and (b) that nothing on
disk was damaged: inputs byte-identical, an existing checkpoint still loads with identical
files, no partial output folder left behind. The model side is in ``test_bad_inputs.py``.
"""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import textwrap

import pytest

from tests.robustness.bad_input_helpers import cli, copy_ckpt, error_line, tree
from tinyinterp.checkpoint import load_model

# --- corpora ------------------------------------------------------------------------------


def _write(path, data: bytes | str):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _latin1(d):
    stories = "Tom had a red ball.\n<|endoftext|>\nMia saw a cat.\n"
    return _write(d / "latin1.txt", stories.encode() + "Zoé ate a crêpe.\n".encode("latin-1"))


BAD_CORPORA = {  # name: (make(folder) -> the path to pass, what the error line must say)
    "missing-path": (lambda d: d / "no-such-stories.txt", [r"no-such-stories\.txt: no such file or folder", r"give a \.txt/\.jsonl/\.json file"]),
    "folder-without-text": (lambda d: (_write(d / "f" / "img.png", b"\x89PNG"), _write(d / "f" / "notes.csv", "a,b"))[0].parent,
                            [r"/f: folder holds no \.txt, \.jsonl or \.json files"]),
    "glob-matching-nothing": (lambda d: d / "*.jsonl", [r"\*\.jsonl: the glob matches no files"]),
    "unsupported-type": (lambda d: _write(d / "stories.csv", "text\nOnce upon a time"), [r"stories\.csv: unsupported file type \.csv", "use .txt"]),
    "empty": (lambda d: _write(d / "empty.txt", ""), [r"empty\.txt: no (training )?stories", "empty or whitespace", "files that hold text"]),
    "whitespace-only": (lambda d: _write(d / "blank.txt", "  \n\t\n\n<|endoftext|>\n   \n<|endoftext|>\n"),
                        [r"blank\.txt: no (training )?stories", "empty or whitespace", "files that hold text"]),
    "binary": (lambda d: _write(d / "model.txt", bytes(range(256)) * 64), [r"model\.txt: looks like a binary file \(NUL bytes\); expected UTF-8 text"]),
    "binary-jsonl": (lambda d: _write(d / "blob.jsonl", b"\x00\x01\x02" * 100), [r"blob\.jsonl: looks like a binary file"]),
    "non-utf8": (_latin1, [r"latin1\.txt: not valid UTF-8 \(line 4, byte 51\)", "iconv -f latin1 -t utf-8"]),
    "corrupt-jsonl-line": (lambda d: _write(d / "s.jsonl", '{"text": "Tom ran."}\n{"text": "Mia sang."}\n{"text": "Sam\n'),
                           [r"s\.jsonl:3: invalid JSON"]),
    "jsonl-without-text": (lambda d: _write(d / "t.jsonl", '{"text": "Tom ran."}\n{"story": "Mia sang."}\n'),
                           [r"t\.jsonl: line 2 has no string field 'text'"]),
}


@pytest.mark.parametrize("command", ["train", "eval", "prepare", "tokenizer"])
@pytest.mark.parametrize("kind", list(BAD_CORPORA))
def test_bad_corpus(capsys, tmp_path, tiny_ckpt, kind, command):
    make, patterns = BAD_CORPORA[kind]
    src = make(tmp_path / "in")
    inputs, ckpt_before = tree(tmp_path / "in"), tree(tiny_ckpt)
    out = tmp_path / "out"
    args = {
        "train": ["train", "--preset", "micro", "--data", src, "--out", out, "--max-steps", "2", "--vocab-size", "384"],
        "eval": ["eval", tiny_ckpt, "--data", src],
        "prepare": ["prepare", "--data", src, "--tokenizer", tiny_ckpt, "--out", out],
        "tokenizer": ["tokenizer", "--data", src, "--out", out, "--vocab-size", "300"],
    }[command]
    error_line(*cli(capsys, *args), *patterns)
    assert not out.exists()  # no partial output folder
    assert tree(tmp_path / "in") == inputs and tree(tiny_ckpt) == ckpt_before


def test_enormous_story_is_chunked(tmp_path):
    """One 3 MB "story" on one line, no separator: read in pieces of at most MAX_STORY_CHARS,
    cut between words, every word kept in order."""
    from tinyinterp.data.readers import MAX_STORY_CHARS, iter_stories

    rng = random.Random(0)
    words = [rng.choice(["Lily", "saw", "a", "big", "red", "ball", "and", "ran", "to", "the", "park."]) for _ in range(700_000)]
    text = " ".join(words)
    path = _write(tmp_path / "one.txt", text)
    pieces = list(iter_stories([str(path)]))
    assert len(pieces) >= len(text) // MAX_STORY_CHARS and max(map(len, pieces)) <= MAX_STORY_CHARS
    assert " ".join(pieces).split() == words


MEMORY_DRIVER = textwrap.dedent("""
    import json, random, resource, sys
    from tinyinterp.cli.main import main

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    tmp, tok = sys.argv[1], sys.argv[2]
    rng = random.Random(0)
    words = "Once upon a time Lily and Tom found a big red ball in the park and played all day".split()
    def story(n_chars):  # one story: no separator, no newline
        return " ".join(rng.choice(words) for _ in range(n_chars // 4))
    open(f"{tmp}/small.txt", "w").write(story(400_000))
    open(f"{tmp}/huge.txt", "w").write(story(4_000_000))
    # the small run warms up every allocator pool; the huge one may only add what does not scale
    assert main(["-q", "prepare", "--data", f"{tmp}/small.txt", "--tokenizer", tok, "--out", f"{tmp}/p-small"]) == 0
    before = peak_mb()
    assert main(["-q", "prepare", "--data", f"{tmp}/huge.txt", "--tokenizer", tok, "--out", f"{tmp}/p-huge"]) == 0
    meta = json.load(open(f"{tmp}/p-huge/meta.json"))
    print(json.dumps({"growth_mb": peak_mb() - before, "splits": meta["splits"]}))
""")


def test_enormous_story_bounded_memory(tmp_path, tiny_ckpt):
    """A 4 MB one-line story is pre-tokenised in bounded memory: the peak RSS grows by far less
    than the file would cost tokenised whole (~60x its size, about 260 MB, before the fix)."""
    env = {**os.environ, "TINYINTERP_CACHE": str(tmp_path / "cache"), "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, "-c", MEMORY_DRIVER, str(tmp_path), str(tiny_ckpt)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    splits = res["splits"]
    assert splits["train"]["stories"] + splits["val"]["stories"] >= 20  # cut into pieces
    assert splits["train"]["bytes"] + splits["val"]["bytes"] > 3_900_000  # nothing lost
    assert res["growth_mb"] < 100, res


EVAL_DRIVER = MEMORY_DRIVER.split("    # the small run")[0] + textwrap.dedent('''
    assert main(["-q", "eval", tok, "--data", f"{tmp}/small.txt", "--json"]) == 0
    before = peak_mb()
    assert main(["-q", "eval", tok, "--data", f"{tmp}/huge.txt", "--json"]) == 0
    print(json.dumps({"growth_mb": peak_mb() - before}))
''').replace("\n    ", "\n")


def test_enormous_story_bounded_memory_in_eval(tmp_path, tiny_ckpt):
    """`eval` streams stories too: a 4 MB one-line story adds little beyond its token ids."""
    env = {**os.environ, "TINYINTERP_CACHE": str(tmp_path / "cache"), "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, "-c", EVAL_DRIVER, str(tmp_path), str(tiny_ckpt)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert json.loads(lines[-2])["bytes"] > 3_900_000  # the eval of the huge file saw all of it
    assert json.loads(lines[-1])["growth_mb"] < 120, lines[-1]


# --- presets and hyper-parameters ---------------------------------------------------------


def test_unknown_preset(capsys, tmp_path, corpus_files):
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as e:  # a flag with choices: argparse's error, one line, status 2
        cli(capsys, "train", "--preset", "ts-9000", "--data", corpus_files["train"], "--out", out, "--max-steps", "1")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") and "tinyinterp train --help" in last
    assert "error: argument --preset: invalid choice: 'ts-9000'" in last and "'micro'" in last and "'ts-33m'" in last
    cfg = _write(tmp_path / "cfg.json", json.dumps({"preset": "ts-9000"}))  # the same mistake in a config file
    error_line(*cli(capsys, "train", "--config", cfg, "--data", corpus_files["train"], "--out", out, "--max-steps", "1"),
               r"preset='ts-9000': unknown; choose one of ts-1m, .*micro")
    assert not out.exists()


@pytest.mark.parametrize("flags,patterns", [
    (["--lr", "0"], [r"lr=0\.0: must be > 0"]),
    (["--lr", "-0.001"], [r"lr=-0\.001: must be > 0"]),
    (["--lr", "nan"], [r"lr=nan: must be a finite number"]),
    (["--batch-size", "0"], [r"batch_size=0: must be a positive integer"]),
    (["--batch-size", "-8"], [r"batch_size=-8: must be a positive integer"]),
    (["--max-steps", "0"], [r"max_steps=0: must be > 0"]),
    (["--max-steps", "-10"], [r"max_steps=-10: must be > 0"]),
    (["--epochs", "0"], [r"epochs=0\.0: must be > 0"]),
    (["--max-tokens", "-1000"], [r"max_tokens=-1000: must be > 0"]),
    (["--grad-accum", "0"], [r"grad_accum=0: must be a positive integer"]),
    (["--warmup-steps", "-1"], [r"warmup_steps=-1: out of range; must be >= 0"]),
    (["--eval-every", "0"], [r"eval_every=0: must be a positive integer"]),
    (["--save-every", "-5"], [r"save_every=-5: must be a positive integer"]),
    (["--threads", "0"], [r"threads=0: out of range; must be a positive integer"]),
    (["--threads", "-2"], [r"threads=-2: out of range; must be a positive integer"]),
    (["--dropout", "1.0"], [r"dropout=1\.0: out of range; must be in \[0, 1\)"]),
    (["--weight-decay", "-0.1"], [r"weight_decay=-0\.1: out of range; must be >= 0"]),
    (["--vocab-size", "0"], [r"vocab_size=0: must be a positive integer"]),
    (["--vocab-size", "100"], [r"vocab_size=100: must be between 257 .* and 65535"]),
    (["--n-ctx", "0"], [r"model config: field n_ctx=0 must be a positive integer"]),
    (["--model-config", '{"d_model": 0}'], [r"model config: field d_model=0 must be a positive integer"]),
    (["--model-config", '{"d_model": -64}'], [r"model config: field d_model=-64 must be a positive integer"]),
    (["--model-config", '{"n_heads": 0}'], [r"model config: field n_heads=0 must be a positive integer"]),
    (["--model-config", '{"n_layers": -1}'], [r"model config: field n_layers=-1 must be a positive integer"]),
    (["--model-config", '{"d_mlp": 0}'], [r"model config: field d_mlp=0 must be a positive integer"]),
    (["--model-config", "[1, 2]"], [r"--model-config: expected a JSON object"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("--") else None)
def test_bad_hyperparameter(capsys, tmp_path, corpus_files, flags, patterns):
    out = tmp_path / "o"
    budget = [] if flags[0] in ("--max-steps", "--epochs", "--max-tokens") else ["--max-steps", "3"]
    args = ["train", "--preset", "micro", "--data", corpus_files["train"], "--out", out, *budget]
    error_line(*cli(capsys, *args, *flags), *patterns)
    assert not out.exists()


@pytest.mark.parametrize("content,patterns", [
    ({"lr": 0.01, "batchsize": 4}, [r"cfg\.json: unknown field\(s\) \['batchsize'\]; did you mean 'batch_size'\?"]),
    ({"lr": "fast"}, [r"lr='fast': must be a finite number"]),
    ({"batch_size": 2.5}, [r"batch_size=2\.5: must be an integer"]),
    ({"model_overrides": [64]}, [r"cfg\.json: model_overrides must be a JSON object"]),
    ("{lr: 1", [r"cfg\.json: cannot read training config \(invalid JSON \(line 1: Expecting property name"]),
    ([1, 2], [r"cfg\.json: expected a JSON object of TrainConfig fields"]),
    (None, [r"cfg\.json: cannot read training config \(no such file\)"]),
], ids=["unknown-field", "lr-string", "batch-float", "overrides-list", "invalid-json", "list", "missing"])
def test_bad_training_config_file(capsys, tmp_path, corpus_files, content, patterns):
    cfg = tmp_path / "cfg.json"
    if content is not None:
        _write(cfg, content if isinstance(content, str) else json.dumps(content))
    out = tmp_path / "o"
    error_line(*cli(capsys, "train", "--config", cfg, "--data", corpus_files["train"], "--out", out, "--max-steps", "2"), *patterns)
    assert not out.exists()


# --- output folders -----------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path, tiny_ckpt):
    """A private copy of the 60-step run: checkpoint, resume state, snapshots, metrics."""
    return copy_ckpt(tiny_ckpt, tmp_path / "run", run=True)


def _train(corpus_files, out, *extra):
    return ["train", "--preset", "micro", "--data", corpus_files["train"], "--eval", corpus_files["eval"], "--out", out,
            "--vocab-size", "384", "--batch-size", "4", "--sample-tokens", "2", *extra]


def test_out_already_holds_checkpoint(capsys, run_dir, corpus_files):
    before = tree(run_dir)
    error_line(*cli(capsys, *_train(corpus_files, run_dir, "--max-steps", "3")),
               str(run_dir), "already holds a checkpoint", "--resume to continue it or --overwrite to replace it")
    assert tree(run_dir) == before
    load_model(run_dir)


def test_overwrite_replaces_checkpoint(capsys, run_dir, corpus_files):
    old = load_model(run_dir).W_E.detach().clone()
    rc, err = cli(capsys, *_train(corpus_files, run_dir, "--max-steps", "3", "--seed", "7", "--overwrite"))
    assert rc == 0, err
    info = json.loads((run_dir / "training.json").read_text())
    assert info["step"] == 3 and info["config"]["seed"] == 7
    assert not (run_dir / "snapshots").exists()  # the old run's snapshots went with it
    assert [json.loads(ln)["step"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()][-1] == 3
    assert not load_model(run_dir).W_E.detach().equal(old)


def test_overwrite_with_bad_corpus_keeps_old_run(capsys, run_dir, corpus_files, tmp_path):
    """--overwrite removes the old run only once the new data is ready: a bad corpus costs nothing."""
    binary = _write(tmp_path / "oops.txt", b"\x00" * 4096)
    before = tree(run_dir)
    error_line(*cli(capsys, "train", "--preset", "micro", "--data", binary, "--out", run_dir, "--max-steps", "3",
                    "--overwrite"), r"oops\.txt: looks like a binary file")
    assert tree(run_dir) == before


def test_resume_without_state(capsys, tmp_path, corpus_files):
    empty = tmp_path / "fresh"
    empty.mkdir()
    error_line(*cli(capsys, *_train(corpus_files, empty, "--max-steps", "3", "--resume")),
               "--resume given but there is no resumable state", "start without --resume")
    assert tree(empty) == {}


def test_corrupt_resume_state(capsys, run_dir, corpus_files):
    (run_dir / "resume" / "state.json").write_text('{"step": 3')
    before = tree(run_dir)
    error_line(*cli(capsys, "train", "--out", run_dir, "--resume", "--max-steps", "70"),
               r"resume/state\.json: unreadable resume state; restart the run with --overwrite")
    assert tree(run_dir) == before


def test_out_is_a_file(capsys, tmp_path, corpus_files):
    f = _write(tmp_path / "model.safetensors", b"precious")
    error_line(*cli(capsys, *_train(corpus_files, f, "--max-steps", "3")), "is a file, not a folder; choose another --out")
    assert f.read_bytes() == b"precious"


def test_checkpoint_folder_as_tokenizer(capsys, tmp_path, tiny_ckpt, corpus_files):
    """--tokenizer given a checkpoint folder (it holds a tokenizer) takes only the tokenizer: the
    other model's config.json once overwrote the new one, leaving a checkpoint that did not load."""
    before = tree(tiny_ckpt)
    out = tmp_path / "o"
    rc, err = cli(capsys, "train", "--preset", "micro", "--data", corpus_files["train"], "--out", out, "--max-steps", "2",
                  "--batch-size", "2", "--n-ctx", "32", "--tokenizer", tiny_ckpt, "--sample-tokens", "2")
    assert rc == 0, err
    assert load_model(out).cfg.n_ctx == 32 and json.loads((out / "training.json").read_text())["step"] == 2
    assert tree(tiny_ckpt) == before


# --- a full disk --------------------------------------------------------------------------


def test_full_disk_at_every_write_keeps_previous_checkpoint(capsys, run_dir, tmp_path, monkeypatch):
    """`train --resume` from step 60 to 62 writes metrics, a snapshot, the checkpoint and the
    resume state. Fail each write in turn with ENOSPC (at its fsync, when the bytes must reach
    the disk): one clear line; the checkpoint is the step-60 one byte for byte, or (when only the
    resume state failed) the complete step-62 one, never a mix; no temporary files; and the
    advised rerun completes."""
    import shutil

    ckpt_files = [p.name for p in run_dir.iterdir() if p.is_file() and p.name != "metrics.jsonl"]
    pristine = tmp_path / "pristine"
    shutil.copytree(run_dir, pristine)
    real_fsync = os.fsync
    fail_at, n_failed, steps_seen = 1, 0, set()
    while True:
        shutil.rmtree(run_dir)
        shutil.copytree(pristine, run_dir)
        before = {name: (run_dir / name).read_bytes() for name in ckpt_files}
        calls = {"n": 0}

        def fsync(fd):
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        rc, err = cli(capsys, "train", "--out", run_dir, "--resume", "--max-steps", "62")
        monkeypatch.setattr(os, "fsync", real_fsync)
        if rc == 0:
            break
        line = error_line(rc, err, "No space left on device", progress=True)
        assert "--resume" in line or "run the command again" in line, line
        load_model(run_dir)  # verifies every file against the manifest
        step = json.loads((run_dir / "training.json").read_text())["step"]
        steps_seen.add(step)
        if step == 60:  # the old checkpoint, byte for byte...
            assert {name: (run_dir / name).read_bytes() for name in ckpt_files} == before, f"write {fail_at}"
        else:  # ...or (when only the resume state failed) the complete new one
            assert step == 62 and "nothing half-written was kept" in line, f"write {fail_at}"
        assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".resume-")]
        assert cli(capsys, "train", "--out", run_dir, "--resume", "--max-steps", "62")[0] == 0  # the advice works
        assert json.loads((run_dir / "training.json").read_text())["step"] == 62
        n_failed += 1
        fail_at += 1
    assert n_failed >= 10 and steps_seen == {60, 62}  # metrics, snapshot, checkpoint, resume state: each had its turn


def test_full_disk_at_first_save(capsys, tmp_path, corpus_files, monkeypatch):
    """A fresh run whose first save hits a full disk: nothing half-written, and the advice
    (--overwrite: there is no resume state yet) works."""
    import safetensors.torch as st

    out = tmp_path / "fresh"
    real = st.save_file

    def no_space(tensors, filename, *a, **k):
        with open(filename, "wb") as fh:
            fh.write(b"half")  # the disk filled up half-way through the weights
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st, "save_file", no_space)
    line = error_line(*cli(capsys, *_train(corpus_files, out, "--max-steps", "2")), str(out), "cannot save step 2",
                      r"No space left on device", "rerun with --overwrite", progress=True)
    monkeypatch.setattr(st, "save_file", real)
    # the log and the run's marker only, no partial checkpoint
    assert sorted(p.name for p in out.iterdir()) == [".tinyinterp-output.json", "metrics.jsonl"], line
    assert cli(capsys, *_train(corpus_files, out, "--max-steps", "2", "--overwrite"))[0] == 0
    assert json.loads((out / "training.json").read_text())["step"] == 2 and load_model(out)


# --- two analyses, one folder -------------------------------------------------------------


def test_second_analysis_on_same_folder_refused(capsys, tmp_path, tiny_ckpt, corpus_files):
    from tinyinterp.analysis.results_io import folder_lock

    out = tmp_path / "analysis"
    _write(out / "heads.json", "[]")  # the first analysis' partial results
    with folder_lock(out):  # the first analysis is running
        before = tree(out)
        error_line(*cli(capsys, "analyze", tiny_ckpt, "--corpus", corpus_files["eval"], "--out", out, "--max-stories", "3",
                        "--no-neurons", "--no-probes", "--no-report"),
                   str(out), "another analysis is writing this folder; wait for it or choose another --out")
        assert tree(out) == before


@pytest.mark.parametrize("kind", ["missing-path", "binary"])
def test_analysis_bad_corpus_leaves_no_folder(capsys, tmp_path, tiny_ckpt, kind):
    """A missing --corpus path is an error (it was once analysed as a one-word story), and a
    failed analysis leaves no empty output folder behind."""
    make, patterns = BAD_CORPORA[kind]
    src = make(tmp_path / "in")
    out = tmp_path / "analysis"
    error_line(*cli(capsys, "analyze", tiny_ckpt, "--corpus", src, "--out", out, "--no-neurons", "--no-probes",
                    "--no-report"), *patterns)
    assert not out.exists()

