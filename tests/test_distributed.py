"""torchrun with 2 CPU processes (gloo) reaches the single-process loss."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_single(tmp_path, corpus_files):
    common = ["train", "--preset", "micro", "--data", str(corpus_files["train"]), "--eval", str(corpus_files["eval"]),
              "--max-steps", "12", "--vocab-size", "384", "--log-every", "1", "--eval-every", "12", "--dropout", "0",
              "--threads", "1", "--warmup-steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "tinyinterp", *common, "--batch-size", "8", "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "tinyinterp", *common, "--batch-size", "4", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-2000:]

    def losses(d):
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [r["train_loss"] for r in rows if "train_loss" in r], [r["val_loss"] for r in rows if "val_loss" in r]

    (t1, v1), (t2, v2) = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(t1) == len(t2) == 12
    assert t2 == pytest.approx(t1, rel=1e-3)
    assert v2 == pytest.approx(v1, rel=1e-3)
    assert json.loads((tmp_path / "two" / "training.json").read_text())["tokens_seen"] == 12 * 8 * 64
