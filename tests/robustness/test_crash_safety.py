"""Killed runs resume to bit-identical weights; a failed write never damages the last checkpoint."""

import errno
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from tinyinterp.checkpoint import load_model
from tinyinterp.training import TrainConfig, train

ARGS = dict(preset="micro", vocab_size=384, max_steps=16, batch_size=4, eval_every=4, save_every=4, warmup_steps=2,
            dropout=0.1, sample_tokens=2, seed=3, threads=1)

DRIVER = textwrap.dedent("""
    import os, signal, sys
    import tinyinterp.training.state as state
    from tinyinterp.training import TrainConfig, train
    mode, out, cfg_json = sys.argv[1], sys.argv[2], sys.argv[3]
    calls = {"n": 0}
    real_save_file = state.save_file
    def dying_save_file(tensors, path, *a, **k):
        calls["n"] += 1
        if mode == "mid-write" and calls["n"] == 3:  # 2nd resume save, after model weights, before optimizer
            with open(path, "wb") as fh:
                fh.write(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save_file(tensors, path, *a, **k)
    state.save_file = dying_save_file
    if mode == "mid-step":
        import tinyinterp.training.trainer as tr
        real_step = tr.Trainer.train_step
        def step(self):
            if self.step == 6:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_step(self)
        tr.Trainer.train_step = step
    import json
    train(TrainConfig(**json.loads(cfg_json)), out)
""")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["mid-step", "mid-write"])
def test_sigkill_then_resume_is_bit_identical(tmp_path, corpus_files, mode):
    cfg = dict(ARGS, data=[str(corpus_files["train"])], eval_data=[str(corpus_files["eval"])])
    train(TrainConfig(**cfg), tmp_path / "ref")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "killed"
    r = subprocess.run([sys.executable, str(driver), mode, str(out), json.dumps(cfg)], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr[-2000:]  # really killed
    state = json.loads(((out / "resume") if (out / "resume").exists() else (out / "resume.old")).joinpath("state.json").read_text())
    assert state["step"] == 4  # the last complete save; the partial one was never picked up
    load_model(out)  # the exported checkpoint from step 4 still loads
    train(TrainConfig(**cfg), out, resume=True)
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_full_disk_keeps_previous_checkpoint(tmp_path, corpus_files, monkeypatch):
    cfg = TrainConfig(**dict(ARGS, data=[str(corpus_files["train"])], eval_data=[str(corpus_files["eval"])], max_steps=8))
    out = tmp_path / "full"
    import safetensors.torch as st

    from tinyinterp.errors import CheckpointError

    real = st.save_file  # what save_checkpoint writes the weights with
    calls = {"n": 0}

    def no_space(tensors, filename, *a, **k):
        calls["n"] += 1
        if calls["n"] >= 2:  # the second export's weights: the disk fills up half-way
            with open(filename, "wb") as fh:
                fh.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(st, "save_file", no_space)
    with pytest.raises(CheckpointError, match="No space"):
        train(cfg, out)
    monkeypatch.setattr(st, "save_file", real)
    model = load_model(out)  # step-4 checkpoint intact, manifest consistent
    assert json.loads((out / "training.json").read_text())["step"] == 4
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert model.cfg.n_layers == 1
