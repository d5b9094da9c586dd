"""`analyze --shard i/n` + `analyze merge` equals one unsharded `analyze` (CLI, tiny checkpoint)."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.compare import assert_close
from tinyinterp.analysis.results_io import staged_results
from tinyinterp.analysis.sharding import parse_shard, shard_groups
from tinyinterp.cli.main import main
from tinyinterp.errors import ConfigError

STORIES = Path(__file__).resolve().parents[1] / "golden" / "stories.txt"
OPTS = ["--max-stories", "40", "--no-probes", "--no-report", "--no-identity"]  # the unsharded run streams too


@pytest.fixture(scope="module")
def runs(tiny_ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    corpus = ["--corpus", str(STORIES)]
    assert main(["analyze", str(tiny_ckpt), *corpus, "--out", str(tmp / "full"), *OPTS]) == 0
    for i in range(2):
        assert main(["analyze", str(tiny_ckpt), *corpus, "--out", str(tmp / f"s{i}"), "--shard", f"{i}/2", *OPTS]) == 0
    assert main(["analyze", "merge", str(tmp / "s1"), str(tmp / "s0"), "--out", str(tmp / "merged")]) == 0
    return tmp


@pytest.mark.slow
def test_two_shards_merge_to_the_unsharded_result(runs):
    s0, s1 = (json.loads((runs / f"s{i}" / "shard.json").read_text()) for i in range(2))
    assert s0["stories"] + s1["stories"] == 40 and min(s0["stories"], s1["stories"]) >= 15
    assert not (runs / "s0" / "heads.json").exists()  # a shard writes statistics, not results
    for name in ("heads.json", "heads_axes.json", "neurons.json", "neurons_summary.json", "ablation.json"):
        full, merged = (json.loads((runs / d / name).read_text()) for d in ("full", "merged"))
        if name == "neurons_summary.json":
            for d in (full, merged):
                d.get("config", {}).pop("progress", None)
        # heads_axes: the ablations use the mean z, whose float summation order differs between the two runs
        assert_close(full, merged, name, rel=1e-3 if name == "heads_axes.json" else 1e-4)
    heads = json.loads((runs / "merged" / "heads.json").read_text())
    assert len({h["label"] for h in heads}) >= 1 and all("positional_r2" in h for h in heads)
    summary = json.loads((runs / "merged" / "summary.json").read_text())
    assert len(summary["shards"]) == 2 and summary["neurons"]["untrained_control"]["n_pos_neurons"] == 0
    # a sharded run streams: rows say which identity tests could not run and never claim pos
    assert summary["neurons"]["mode"] == "streaming" and "story bootstrap" in summary["neurons"]["untestable_why"]
    rows = json.loads((runs / "merged" / "neurons.json").read_text())
    assert not any(r["category"] == "pos" for r in rows)
    assert all("streaming" in " ".join(r["reasons"]) for r in rows if r["category"] in ("untestable", "token"))


def test_merge_refuses_incomplete_or_mismatched_shards(runs, tmp_path, capsys):
    rc = main(["analyze", "merge", str(runs / "s0"), "--out", str(tmp_path / "m")])
    assert rc == 2 and "missing [1]" in capsys.readouterr().err
    rc = main(["analyze", "merge", str(runs / "s0"), str(runs / "s0"), "--out", str(tmp_path / "m")])
    assert rc == 2 and "duplicated [0]" in capsys.readouterr().err
    other = tmp_path / "other"
    meta = json.loads((runs / "s1" / "shard.json").read_text())
    with staged_results(other) as stage:  # a complete shard of a run on another corpus
        (stage / "shard.json").write_text(json.dumps({**meta, "corpus_sha256": "0" * 64}))
        (stage / "stats.safetensors").write_bytes((runs / "s1" / "stats.safetensors").read_bytes())
    rc = main(["analyze", "merge", str(runs / "s0"), str(other), "--out", str(tmp_path / "m")])
    assert rc == 2 and "differ in tagged corpus" in capsys.readouterr().err
    rc = main(["analyze", "merge", str(tmp_path), "--out", str(tmp_path / "m")])
    assert rc == 2 and "no shard.json" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_merge_checks_the_corpus_fingerprint(runs, tmp_path, capsys, corpus_files):
    rc = main(["analyze", "merge", str(runs / "s0"), str(runs / "s1"), "--out", str(tmp_path / "m"),
               "--corpus", str(corpus_files["train"])])
    assert rc == 2 and "corpus differs from the shards" in capsys.readouterr().err


def test_shard_spec_and_groups():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    groups = [np.array([0, 2, 4, 6, 8]), np.array([1, 3, 5, 7])]
    parts = [shard_groups(groups, i, 3) for i in range(3)]
    for g in range(2):  # every story in exactly one shard
        assert sorted(np.concatenate([p[g] for p in parts]).tolist()) == groups[g].tolist()


def _forge(folder, shard_json: bytes, stats: bytes) -> None:
    """A shard folder with these two files and a matching complete.json (as if a run had written them)."""
    with staged_results(folder) as stage:
        (stage / "shard.json").write_bytes(shard_json)
        (stage / "stats.safetensors").write_bytes(stats)


def test_merge_refuses_damaged_shard_statistics(runs, tmp_path, capsys):
    bad = tmp_path / "s1"
    meta_bytes = (runs / "s1" / "shard.json").read_bytes()
    data = (runs / "s1" / "stats.safetensors").read_bytes()
    for damaged in (data[: len(data) // 2], b"not safetensors at all"):
        _forge(bad, meta_bytes, damaged)
        rc = main(["analyze", "merge", str(runs / "s0"), str(bad), "--out", str(tmp_path / "m")])
        err = capsys.readouterr().err
        assert rc == 2 and "stats.safetensors: unreadable" in err and "rerun that shard" in err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m").exists()
    from safetensors.torch import load_file, save

    sd = load_file(str(runs / "s1" / "stats.safetensors"))
    sd.pop("heads.obs")
    _forge(bad, meta_bytes, save(sd))
    rc = main(["analyze", "merge", str(runs / "s0"), str(bad), "--out", str(tmp_path / "m")])
    assert rc == 2 and "not the statistics of an `analyze --shard` run" in capsys.readouterr().err
    sd = load_file(str(runs / "s1" / "stats.safetensors"))
    sd["neurons.sel.hist"] = sd["neurons.sel.hist"][:1]
    _forge(bad, meta_bytes, save(sd))
    rc = main(["analyze", "merge", str(runs / "s0"), str(bad), "--out", str(tmp_path / "m")])
    assert rc == 2 and "statistic neurons.sel.hist is shape" in capsys.readouterr().err
    meta = json.loads(meta_bytes)
    del meta["options"]
    _forge(bad, json.dumps(meta).encode(), data)
    rc = main(["analyze", "merge", str(runs / "s0"), str(bad), "--out", str(tmp_path / "m")])
    assert rc == 2 and "missing field(s) ['options']" in capsys.readouterr().err


def test_shard_killed_between_its_two_files_is_refused_then_rerun(runs, tiny_ckpt, tmp_path, capsys):
    """New stats.safetensors beside an old shard.json (a kill between the two renames): one line, not an IndexError."""
    from safetensors.torch import load_file, save_file

    s1 = tmp_path / "s1"
    _forge(s1, (runs / "s1" / "shard.json").read_bytes(), (runs / "s1" / "stats.safetensors").read_bytes())
    sd = load_file(str(s1 / "stats.safetensors"))
    sd["neurons.sel.hist"] = sd["neurons.sel.hist"][:1]  # another run's statistics (another shape)
    save_file(sd, str(s1 / "stats.safetensors"))
    rc = main(["analyze", "merge", str(runs / "s0"), str(s1), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and "not the file the analysis wrote" in err and len(err.strip().splitlines()) == 1
    (s1 / "complete.json").unlink()  # killed before the marker: refused too
    (s1 / ".stats.safetensors.x.tmp").write_bytes(b"half")
    rc = main(["analyze", "merge", str(runs / "s0"), str(s1), "--out", str(tmp_path / "m")])
    assert rc == 2 and "no complete.json" in capsys.readouterr().err and not (tmp_path / "m").exists()
    corpus = ["--corpus", str(STORIES)]
    assert main(["analyze", str(tiny_ckpt), *corpus, "--out", str(s1), "--shard", "1/2", *OPTS]) == 0  # the rerun
    assert not list(s1.glob(".*.tmp")) and not (s1 / ".staging").exists()
    assert main(["analyze", "merge", str(runs / "s0"), str(s1), "--out", str(tmp_path / "m")]) == 0
