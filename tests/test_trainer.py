import json

import pytest
import torch
from safetensors.torch import load_file

from tinyinterp.errors import ConfigError
from tinyinterp.training import TrainConfig, train
from tinyinterp.training.schedule import log_spaced_steps, lr_at


def _cfg(files, **kw):
    base = dict(data=[str(files["train"])], eval_data=[str(files["eval"])], preset="micro", vocab_size=384,
                max_steps=24, batch_size=4, grad_accum=2, eval_every=8, save_every=8, warmup_steps=4, dropout=0.1,
                sample_tokens=4, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_is_bit_identical(tmp_path, corpus_files):
    cfg = _cfg(corpus_files)
    train(cfg, tmp_path / "full")
    train(cfg, tmp_path / "part", stop_after=8)  # as if killed right after the step-8 save
    partial = load_file(str(tmp_path / "part" / "resume" / "model.safetensors"))
    assert json.loads((tmp_path / "part" / "resume" / "state.json").read_text())["step"] == 8
    train(cfg, tmp_path / "part", resume=True)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(partial[k], v) for k, v in load_file(str(tmp_path / "part" / "resume" / "model.safetensors")).items())
    full_log = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    part_log = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "wall_s")} for r in rows]  # noqa: E731
    assert strip(full_log) == strip(part_log)


def test_training_learns_and_logs(tiny_ckpt):
    rows = [json.loads(x) for x in (tiny_ckpt / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train_loss" in r]
    evals = [r for r in rows if "val_bpb" in r]
    assert train_rows[-1]["train_loss"] < train_rows[0]["train_loss"] - 1.0
    assert len(evals) == 2 and evals[-1]["val_bpb"] < evals[0]["val_bpb"]
    info = json.loads((tiny_ckpt / "training.json").read_text())
    assert info["finished"] and info["step"] == 60 and info["tokens_seen"] == 60 * 8 * 64
    assert info["data"]["sources"]["train"][0]["sha256"]
    assert len(info["samples"]) == 6
    snaps = sorted(p.name for p in (tiny_ckpt / "snapshots").iterdir())
    assert snaps == [f"step_{s:07d}" for s in log_spaced_steps(60, 3)]
    card = (tiny_ckpt / "README.md").read_text()
    assert "bits per byte" in card and "Once upon a time" in card


def test_resume_with_a_new_budget(tmp_path, corpus_files):
    train(_cfg(corpus_files, max_steps=8), tmp_path / "b")
    with pytest.raises(ConfigError, match="already at step 8"):
        train(_cfg(corpus_files, max_steps=8), tmp_path / "b", resume=True)
    train(_cfg(corpus_files, max_steps=12), tmp_path / "b", resume=True)  # extend: schedule recomputed
    assert json.loads((tmp_path / "b" / "training.json").read_text())["step"] == 12


def test_refuses_existing_checkpoint(tmp_path, corpus_files):
    cfg = _cfg(corpus_files, max_steps=2, eval_every=100)
    train(cfg, tmp_path / "x")
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train(cfg, tmp_path / "x")
    train(cfg, tmp_path / "x", overwrite=True)
    with pytest.raises(ConfigError, match="different configuration"):
        train(_cfg(corpus_files, max_steps=2, lr=1e-4), tmp_path / "x", resume=True)


@pytest.mark.parametrize("kw,match", [
    ({"lr": 0}, "lr"), ({"batch_size": 0}, "batch_size"), ({"batch_size": -3}, "batch_size"),
    ({"preset": "huge"}, "unknown"), ({"max_steps": None}, "exactly one"), ({"epochs": 1.0}, "exactly one"),
    ({"dropout": 1.5}, "dropout"), ({"warmup_steps": -1}, "warmup"),
])
def test_config_validation(corpus_files, kw, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(corpus_files, **kw)


def test_schedule():
    assert lr_at(0, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_at(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    s = log_spaced_steps(10_000, 8)
    assert len(s) == 8 and s[0] == 1 and s[-1] == 10_000 and s == sorted(set(s))


def test_every_evaluation_reads_the_same_tokens_and_the_whole_split_is_a_separate_record(tmp_path, corpus_files):
    """Periodic and final evaluations read the same eval_tokens (one comparable curve); the whole split is read
    once more at the end, logged as its own record, and is what training.json calls the final evaluation."""
    train(_cfg(corpus_files, max_steps=8, eval_every=4, eval_tokens=128), tmp_path / "run")
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "val_bpb" in x]
    assert [(r["step"], r["val_tokens"]) for r in evals[:-1]] == [(4, 128), (8, 128)]
    assert evals[-1]["step"] == 8 and evals[-1]["val_tokens"] > 128
    final = json.loads((tmp_path / "run" / "training.json").read_text())["final_eval"]
    assert final["val_tokens"] == evals[-1]["val_tokens"] and final["val_bpb"] == evals[-1]["val_bpb"]
