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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_with_separate_caches_train_like_one(tmp_path, corpus_files):
    """Two torchrun "machines" (one process each, their own $TINYINTERP_CACHE, a shared --out):
    each machine trains its tokenizer and prepares its data itself; the ranks agree on both,
    and the run matches the single-process losses."""
    common = ["train", "--preset", "micro", "--data", str(corpus_files["train"]), "--eval", str(corpus_files["eval"]),
              "--max-steps", "6", "--vocab-size", "384", "--log-every", "1", "--eval-every", "6", "--dropout", "0",
              "--threads", "1", "--warmup-steps", "2"]
    base = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "tinyinterp", *common, "--batch-size", "8", "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env={**base, "TINYINTERP_CACHE": str(tmp_path / "c0")},
                            timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(n),
                               "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                               "-m", "tinyinterp", *common, "--batch-size", "4", "--out", str(tmp_path / "two")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**base, "TINYINTERP_CACHE": str(tmp_path / f"node{n}")})
             for n in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert (tmp_path / "node1" / "tokenizers").is_dir()  # the second machine built its own tokenizer

    def losses(d):
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [r["train_loss"] for r in rows if "train_loss" in r]

    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-3)
