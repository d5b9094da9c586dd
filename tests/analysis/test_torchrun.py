"""`torchrun -m tinyinterp analyze` with 2 gloo ranks: the 1-process results; a killed rank leaves the folder as it was."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.analysis.test_sharding import OPTS, STORIES
from tests.support.compare import assert_close as _close
from tinyinterp.analysis.results_io import check_complete
from tinyinterp.cli.main import main

RESULTS = ("heads.json", "neurons.json", "neurons_summary.json", "ablation.json")


def _torchrun(n: int, ckpt, out, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "tinyinterp",
           "analyze", str(ckpt), "--corpus", str(STORIES), "--out", str(out), *OPTS, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _compare(a: Path, b: Path) -> None:
    for name in RESULTS:
        x, y = (json.loads((d / name).read_text()) for d in (a, b))
        if name == "neurons_summary.json":
            for d in (x, y):
                d.get("config", {}).pop("progress", None)
        _close(x, y, name)


@pytest.fixture(scope="module")
def one_process(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrun") / "one"
    assert main(["analyze", str(tiny_ckpt), "--corpus", str(STORIES), "--out", str(out), *OPTS]) == 0
    return out


@pytest.mark.slow
def test_two_ranks_equal_one_process(one_process, tiny_ckpt, tmp_path):
    proc = _torchrun(2, tiny_ckpt, tmp_path / "two")
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    check_complete(tmp_path / "two")
    _compare(one_process, tmp_path / "two")
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["ranks"] == 2
    assert log.count("results written to") == 1  # rank 0 alone reports


def _rank_pid(agent: int, rank: int) -> int | None:
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            if int((pid / "stat").read_text().split(") ")[1].split()[1]) != agent:
                continue
            env = (pid / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if f"RANK={rank}".encode() in env:
            return int(pid.name)
    return None


@pytest.mark.slow
def test_killed_rank_leaves_the_previous_results_and_a_rerun_completes(one_process, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(one_process, out)  # a complete earlier analysis in the folder
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    proc = _torchrun(2, tiny_ckpt, out)
    deadline = time.time() + 300
    victim = None
    while time.time() < deadline and proc.poll() is None:
        victim = victim or _rank_pid(proc.pid, 1)
        if victim and (out / ".staging").is_dir():  # rank 0 is inside the analysis
            time.sleep(2.0)
            os.kill(victim, signal.SIGKILL)
            break
        time.sleep(0.2)
    assert victim is not None, "rank 1 never started"
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}
    check_complete(out)  # still the earlier analysis, whole
    rerun = _torchrun(2, tiny_ckpt, out)
    log, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, log[-3000:]
    check_complete(out)
    assert not (out / ".staging").exists() and not list(out.glob(".*.tmp"))
    _compare(one_process, out)
