"""Analysis scale-out: the same analysis on 1 and 2 torchrun ranks, and the tag store vs the JSON tag cache.

    python benchmarks/analysis_scaling.py --save benchmarks/results/analysis_scaling.json [--sizes 250000 500000]

Model and text as in ``benchmarks/analysis_throughput.py`` (``checkpoints/ts-1l``; genuine
TinyStories read at run time from ``../shared/data/tinystories``, never written into the repo).
Everything derived (tag cache, tag store, the chosen stories) lives in a temporary folder.

(1) Tagging: the first ``--tag-stories`` stories are tagged with an empty cache and then read
back warm, (a) with the cache ``tag_corpus`` kept before the tag store (one JSON file per story,
reproduced in :func:`json_cache_corpus`) and (b) with ``tag_corpus`` itself, whose cache is now the
columnar tag store; files and bytes on disk of each. Then the rest of the largest corpus is tagged
into the store (:func:`~tinyinterp.analysis.corpus.tagging.tag_into_store`; the workers read it).

(2) Scaling: for each size (tokens the model sees: BOS included, cut at ``n_ctx``) and each
world size in ``--worlds``, ``python -m torch.distributed.run --standalone --nproc_per_node W``
runs this file with ``--worker``: each rank (one thread) loads the model and its corpus from the
store as ``torchrun ... analyze`` does (:func:`~tinyinterp.analysis.distributed.corpus_for_rank`:
rank 0, which finishes, the whole corpus; every other rank only its share plus the pre-pass's
corpus-wide counts), then runs :func:`tinyinterp.analysis.distributed.distributed_stats` — the
heads + neurons analysis with the untrained control, the ranks splitting the calibration passes and
each streaming its share of the stories, statistics sent to rank 0, which adds them and finishes
(tests, FDR, controls, examples). The timed part (``analysis_s``, rank 0, between two barriers) is
that call; ``speedup`` = the 1-rank time / the W-rank time at the same size. Each rank reports its
peak RSS (``VmHWM``), the stories and tokens it holds, and its calibration and pass seconds (wall,
and CPU seconds of the process: on a busy machine only the CPU seconds show the split);
``rss_growth_share_ranks`` is the peak RSS growth of the share-holding ranks from the smallest to
the largest size (flat = bounded by the share).
The machine's 1-minute load average is recorded before every run: with other work on the 2
cores the speedup is meaningless, so compare only runs with load < 1.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def _tree(path: Path) -> dict:
    files = [p for p in path.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def take_tokens(texts: list[str], model, n_tokens: int) -> list[str]:
    """The first stories of ``texts`` whose tokens (BOS + ids, cut at n_ctx) reach ``n_tokens``."""
    n_ctx, total, out = int(model.cfg.n_ctx), 0, []
    for t in texts:
        if not t.strip():
            continue
        out.append(t)
        total += min(n_ctx, 1 + len(model.tokenizer(t, add_special_tokens=False)["input_ids"]))
        if total >= n_tokens:
            return out
    raise SystemExit(f"only {total} tokens in the corpus; pass smaller --sizes")


def json_cache_corpus(texts: list[str], model, nlp, root: Path):
    """The tag cache ``tag_corpus`` kept before the tag store, reproduced as the baseline: one JSON file per
    story (atomic write, keyed by sha256 of the text), read back on a hit; packed the same way."""
    import hashlib

    from tinyinterp.analysis.corpus.alignment import align_story, pack_record
    from tinyinterp.analysis.corpus.store import StoreBuilder
    from tinyinterp.analysis.corpus.tagging import _bos_id
    from tinyinterp.atomic import write_text

    tok, n_ctx, bos, builder = model.tokenizer, int(model.cfg.n_ctx), _bos_id(model.tokenizer), StoreBuilder()
    for c0 in range(0, len(texts), 128):
        chunk = [t for t in texts[c0:c0 + 128] if t.strip()]
        paths = [root / f"{hashlib.sha256(t.encode()).hexdigest()}.json" for t in chunk]
        recs = [json.loads(p.read_text()) if p.is_file() else None for p in paths]
        todo = [i for i, r in enumerate(recs) if r is None]
        if todo:
            enc = tok([chunk[i] for i in todo], add_special_tokens=False, return_offsets_mapping=True)
            for j, (i, doc) in enumerate(zip(todo, nlp.pipe([chunk[i] for i in todo], batch_size=64))):
                recs[i] = align_story(chunk[i], doc, enc["input_ids"][j], enc["offset_mapping"][j], bos)
                write_text(paths[i], json.dumps(recs[i], separators=(",", ":")))
        for text, rec in zip(chunk, recs):
            pack_record(builder, text, rec, n_ctx)
        builder.flush()
    return builder.build()


def tagging(texts: list[str], model, tmp: Path, n_tag: int) -> tuple[dict, Path]:
    """Fresh and warm tagging: the JSON-file cache (baseline) vs ``tag_corpus`` on the tag store; then the rest."""
    from tinyinterp.analysis.corpus.tagging import load_spacy, tag_corpus, tag_into_store

    os.environ["TINYINTERP_CACHE"] = str(tmp / "cache")
    tok, n_ctx, nlp = model.tokenizer, int(model.cfg.n_ctx), load_spacy()
    sub = texts[:n_tag]
    list(nlp.pipe(texts[-20:]))  # spaCy's first batch is slow: warm it up before timing either side
    out: dict = {"stories": len(sub)}
    root = tmp / "json-cache"
    root.mkdir()
    for label, run in (("json_cache", lambda: json_cache_corpus(sub, model, nlp, root)),
                       ("store", lambda: tag_corpus(sub, tok, n_ctx, nlp=nlp, progress=False).stories)):
        for phase in ("fresh", "warm"):
            t = time.perf_counter()
            got = run()
            out[f"{label}_{phase}_s"] = time.perf_counter() - t
        out[f"{label}_disk"] = _tree(root if label == "json_cache" else tmp / "cache" / "tags")
        out.setdefault("tokens", got.n_tokens)
        assert got.n_tokens == out["tokens"] and len(got) == len(sub)
    for k in ("json_cache_fresh", "json_cache_warm", "store_fresh", "store_warm"):
        out[f"{k}_stories_per_s"] = len(sub) / out[f"{k}_s"]
        out[f"{k}_tokens_per_s"] = out["tokens"] / out[f"{k}_s"]
    out["warm_read_speedup"] = out["json_cache_warm_s"] / out["store_warm_s"]
    out["fresh_tagging_ratio"] = out["json_cache_fresh_s"] / out["store_fresh_s"]
    t = time.perf_counter()
    store = tag_into_store(texts, tok, nlp=nlp, progress=False)  # the default store of this model: the workers read it
    out["store_rest"] = {"stories": len(texts) - len(sub), "s": time.perf_counter() - t}
    return out, store.path


def worker(args: argparse.Namespace) -> None:
    """One torchrun rank: load, analyse its share, rank 0 writes the timings and every rank's peak RSS."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    from analysis_throughput import get_model, peak_rss_mb

    from tinyinterp.analysis.distributed import barrier, corpus_for_rank, distributed_stats, init_distributed, shutdown
    from tinyinterp.analysis.corpus.tag_store import TagStore
    from tinyinterp.analysis.heads import HeadConfig
    from tinyinterp.analysis.neurons import NeuronConfig

    t_start = time.perf_counter()
    info = init_distributed("cpu")
    model, _ = get_model([])
    texts = json.loads(Path(args.corpus).read_text())  # the benchmark's list; `analyze` streams the files instead
    meta = json.loads((Path(args.store) / "store.json").read_text())
    store = TagStore(args.store, meta["spacy_model"], meta["tokenizer_sha256"])
    t = time.perf_counter()
    # as `torchrun ... analyze` builds it: rank 0 (which finishes) the whole corpus, every other rank its share
    # placed at the corpus-wide indices plus the pre-pass's counts
    mine = texts[info.rank::info.world]
    corpus = corpus_for_rank(store, int(model.cfg.n_ctx), info, mine, len(texts), texts if info.is_main else None)
    if not info.is_main:
        del texts
    load_s = time.perf_counter() - t
    import tinyinterp.analysis.sharding as engine  # Jobs.stream calls the run_pass it imported

    pass_s, calib_s, run_pass, build_jobs = [0.0, 0.0], [0.0, 0.0], engine.run_pass, engine.build_jobs

    def timed(fn, acc):  # acc: [wall seconds, CPU seconds of this process] (CPU time is meaningful on a busy machine)
        def run(*a, **k):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                acc[0] += time.perf_counter() - t0
                acc[1] += time.process_time() - c0
        return run

    engine.run_pass = timed(run_pass, pass_s)  # the streaming passes (split across ranks)
    engine.build_jobs = timed(build_jobs, calib_s)  # checks, labels and the calibration passes (split across ranks)
    barrier(info)
    t = time.perf_counter()
    res = distributed_stats(info)(model, corpus, HeadConfig(), NeuronConfig())
    barrier(info)
    analysis_s = time.perf_counter() - t
    held = corpus.packed()
    me = {"rank": info.rank, "peak_rss_mb": peak_rss_mb(), "load_corpus_s": load_s, "pass_s": pass_s[0],
          "pass_cpu_s": pass_s[1], "calibration_s": calib_s[0], "calibration_cpu_s": calib_s[1], "process_s": time.perf_counter() - t_start, "holds_whole_corpus": corpus.share is None,
          "stories_held": int((held.lengths > 0).sum()), "tokens_held": int(held.lengths.sum())}
    ranks = [None] * info.world
    if info.enabled:
        dist.all_gather_object(ranks, me)
    else:
        ranks = [me]
    if info.is_main:
        assert res[0] is not None and res[1] is not None
        Path(args.out).write_text(json.dumps({"world": info.world, "stories": len(corpus), "tokens": corpus.n_tokens,
                                              "analysis_s": analysis_s, "ranks": ranks}))
    shutdown(info)


def run_world(world: int, corpus: Path, store: Path, tmp: Path) -> dict:
    out = tmp / f"run-{world}-{corpus.stem}.json"
    load = os.getloadavg()[0]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", __file__,
           "--worker", "--corpus", str(corpus), "--store", str(store), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    res = json.loads(out.read_text())
    res.update(wall_s=time.perf_counter() - t, load_avg_1min_before=load)
    print(json.dumps(res), file=sys.stderr)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 500_000], help="tokens analysed")
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2], help="ranks per run (torchrun --nproc_per_node)")
    ap.add_argument("--tag-stories", type=int, default=1500, help="stories for the store vs JSON cache comparison")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "tinystories"))
    ap.add_argument("--save", default=None, help="also write the JSON here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    import analysis_throughput as bench

    _, files = bench.story_source(args.data)
    model, model_desc = bench.get_model(files)
    texts = take_tokens(bench.read_stories(files, None), model, max(args.sizes))
    result: dict = {"model": model_desc, "uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                    "cpu_count": os.cpu_count(), "torch_threads_per_rank": 1}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result["tagging"], store = tagging(texts, model, tmp, args.tag_stories)
        runs = []
        for size in args.sizes:
            corpus = tmp / f"corpus-{size}.json"
            corpus.write_text(json.dumps(take_tokens(texts, model, size)))
            by_world = {w: run_world(w, corpus, store, tmp) for w in args.worlds}
            base = by_world[min(args.worlds)]
            for w, r in by_world.items():
                r["size"] = size
                r["speedup"] = base["analysis_s"] / r["analysis_s"]
                r["max_rank_peak_rss_mb"] = max(x["peak_rss_mb"] for x in r["ranks"])
                shares = [x["peak_rss_mb"] for x in r["ranks"] if not x["holds_whole_corpus"]]
                r["max_share_rank_peak_rss_mb"] = max(shares) if shares else None  # ranks other than 0
                runs.append(r)
        result["runs"] = runs
    result["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    big = [r for r in runs if r["size"] == max(args.sizes)]
    result["speedup_2_ranks"] = next((r["speedup"] for r in big if r["world"] == 2), None)
    small = {r["world"]: r["max_rank_peak_rss_mb"] for r in runs if r["size"] == min(args.sizes)}
    result["rss_growth_per_rank"] = {w: r["max_rank_peak_rss_mb"] / small[r["world"]] for w, r in
                                     ((r["world"], r) for r in big)}
    small_share = {r["world"]: r["max_share_rank_peak_rss_mb"] for r in runs if r["size"] == min(args.sizes)}
    result["rss_growth_share_ranks"] = {r["world"]: r["max_share_rank_peak_rss_mb"] / small_share[r["world"]]
                                        for r in big if r["max_share_rank_peak_rss_mb"] and small_share.get(r["world"])}
    result["sizes_ratio"] = max(args.sizes) / min(args.sizes)
    result["load_avg_note"] = "compare timings only from runs whose load_avg_1min_before is < 1 (2 cores)"
    text = json.dumps(result)
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
