"""Extrapolate the time and memory to analyse the full TinyStories training set.

    python benchmarks/analysis_throughput.py --save runs/bench/analysis.json   # measure (about 15 min)
    python benchmarks/scale_out.py --analysis runs/bench/analysis.json         # extrapolate (about 30 s)

Inputs, all measured on this machine: the analysis benchmark's JSON (analysis and untrained
control tokens/s at its largest size, one thread; peak RSS at its two sizes; tokens per
story), plus a fresh spaCy tagging rate measured here on ``--tag-stories`` stories with an
empty tag cache (the benchmark's own tagging usually reads the cache). Nothing else is
assumed except the dataset size (``--stories``, default 2,119,719: the train split of
``roneneldan/TinyStories``) and, for GPUs, a pass rate you supply (``--gpu-tokens-per-s``):
no GPU was available to measure one, so without it the GPU rows give only the CPU-bound part.

Model of a sharded run (``tinyinterp analyze --shard i/n`` + ``analyze merge``):
  tagging  — every shard needs the whole tagged corpus; tags are cached on disk by text hash,
             and each shard tags its own n-th of the stories first, so shards started together
             on one machine (or sharing ``$TINYINTERP_CACHE``) tag the corpus n ways, then read
             the rest from the cache (spaCy on CPU: a GPU does not speed this part);
  pass     — the streaming pass (heads + neurons + untrained control) splits n ways;
  reading  — every shard, and the merge, reads the whole tagged corpus back from the cache
             (the benchmark's cached tagging rate; not split);
  memory   — the measured peak, plus per further token the packed corpus (a shard keeps
             token ids and tags, not texts or offsets) and the neuron labels (shared with
             the untrained control); the merge holds the corpus with texts;
  merge    — reading the cache dominates it (calibration, tests, examples, ablations and
             probes read a bounded number of stories).
With ``--scaling FILE`` (written by ``benchmarks/analysis_scaling.py --save``) it also tabulates
the torchrun analysis (``--ranks``, default 1 8 16), from that run's measurements only:
  tagging  — into the columnar tag store, each rank tagging its share (fresh store rate per core);
  reading  — rank 0, which finishes alone (examples, ablations, probes draw on any story), reads
             the whole tagged corpus from the store (warm store rate; not split); every other rank
             reads only its share (split ``N`` ways) and runs the pre-pass over it;
  pass     — the streaming passes (heads + neurons + untrained control) split ``N`` ways
             (1-rank pass seconds per token / N);
  fixed    — the calibration passes, split ``N`` ways across the ranks (the 1-rank run's
             ``calibration_s``), plus rank 0's finishing (1-rank analysis time minus its pass and
             calibration time at the largest size); the critical path is rank 0's;
  memory   — rank 0: the measured peak at the largest size plus, per further token, the packed
             corpus with texts and the labels; every other rank: the measured peak plus its share
             (packed without texts, and labels) and the pre-pass's per-story bookkeeping
             (:data:`SHARE_BYTES_PER_STORY`, every story of the corpus).
Prints one JSON object (last line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
# what a rank holding only its share still keeps per story of the whole corpus: the placed store's index (8 bytes),
# the pre-pass's lengths and analysed counts (8 + 8), the labels' story starts (8), the tag store's mapped
# sorted keys (32), and transients of the same size (8): counted, not measured
SHARE_BYTES_PER_STORY = 72


def fresh_tagging_rate(n_stories: int, data: str) -> dict:
    """spaCy tagging + alignment tokens/s (one process), with an empty cache."""
    import analysis_throughput as bench

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TINYINTERP_CACHE"] = tmp
        from tinyinterp.analysis.corpus import label_corpus
        from tinyinterp.analysis.corpus import corpus_from_texts, tag_corpus
        from tinyinterp.analysis.corpus.tagging import load_spacy

        _, files = bench.story_source(data)
        model, _ = bench.get_model(files)
        texts = bench.read_stories(files, n_stories + 50)[50:]  # not the stories the benchmark tagged first
        load_spacy()  # model load not timed
        t = time.perf_counter()
        corpus = corpus_from_texts(texts, model, progress=False)
        dt = time.perf_counter() - t
        lean = tag_corpus(iter(texts), model.tokenizer, model.cfg.n_ctx, keep_text=False, progress=False)  # cache hits
        labels = label_corpus(corpus)
    n = corpus.n_tokens
    return {"stories": len(corpus), "tokens": n, "seconds": dt, "tokens_per_s": n / dt,
            "store_bytes_per_token": store_bytes(corpus) / n, "store_bytes_per_token_no_text": store_bytes(lean) / n,
            "label_bytes_per_token": (labels.flat_tags.nbytes + labels.flat_words.nbytes) / n}


def store_bytes(corpus) -> int:
    """Bytes held by a packed corpus: its arrays plus its story texts."""
    d = corpus.stories._data
    return (sum(a.nbytes for a in (d.starts, d.tokens, d.offsets, d.cont, *d.codes.values()))
            + sum(sys.getsizeof(t) for t in d.texts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--analysis", required=True, help="JSON written by analysis_throughput.py --save")
    ap.add_argument("--stories", type=int, default=2_119_719, help="stories to analyse (TinyStories train split)")
    ap.add_argument("--tag-stories", type=int, default=300, help="stories tagged fresh to measure the tagging rate")
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2, 8, 16], help="shard counts to tabulate")
    ap.add_argument("--gpu-tokens-per-s", type=float, default=None,
                    help="analysis pass rate of one GPU shard, if you measured one (not measured here)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "tinystories"))
    ap.add_argument("--scaling", default=None, help="JSON written by analysis_scaling.py --save (torchrun rows)")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 8, 16], help="torchrun world sizes to tabulate")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    bench = json.loads(Path(args.analysis).read_text())
    sizes = sorted(bench["sizes"].values(), key=lambda r: r["tokens"])
    small, large = sizes[0], sizes[-1]
    tok_per_story = large["tokens"] / large["stories"]
    n_tok = args.stories * tok_per_story
    pass_s_per_tok = (large["analysis_s"] + large.get("control_s", 0.0)) / large["tokens"]
    tag = fresh_tagging_rate(args.tag_stories, args.data)
    # memory: the measured peak at the largest size, plus per token of the rest of the corpus the
    # packed store (with texts: unsharded and merge; without: a shard) and the labels of the
    # neuron analysis (one copy: the untrained control shares it)
    labels = tag["label_bytes_per_token"]
    full_bpt, lean_bpt = tag["store_bytes_per_token"] + labels, tag["store_bytes_per_token_no_text"] + labels
    grow = lambda bpt: (large["peak_rss_mb"] * 2**20 + bpt * (n_tok - large["tokens"])) / 2**30  # noqa: E731
    mem_gb, shard_gb = grow(full_bpt), grow(lean_bpt)
    tag_h = n_tok / tag["tokens_per_s"] / 3600
    # reading the whole tagged corpus back from the cache: every shard and the merge do it once
    if not bench.get("from_cache"):
        raise SystemExit(f"{args.analysis}: its tagging was not read from the cache; rerun the benchmark once more")
    read_h = args.stories / (bench["tagged_stories"] / bench["tagging_s"]) / 3600

    rows = []
    for n in args.shards:
        cpu_pass_h = n_tok * pass_s_per_tok / n / 3600
        extra_h = 2 * read_h if n > 1 else 0.0  # a shard's re-read after tagging its share, and the merge
        row = {"shards": n, "tagging_h": round(tag_h / n, 1), "cpu_pass_h": round(cpu_pass_h, 1),
               "cache_read_and_merge_h": round(extra_h, 1), "cpu_total_h": round(tag_h / n + cpu_pass_h + extra_h, 1),
               "memory_per_process_gb": round(mem_gb if n == 1 else shard_gb, 1),
               "memory_all_shards_gb": round(mem_gb if n == 1 else shard_gb * n, 1),
               "memory_merge_gb": round(mem_gb, 1) if n > 1 else None}
        if args.gpu_tokens_per_s:
            gpu_pass_h = n_tok / args.gpu_tokens_per_s / n / 3600
            row.update(gpu_pass_h=round(gpu_pass_h, 2),
                       gpu_total_h=round(tag_h / n + gpu_pass_h + extra_h, 1))
        rows.append(row)
    out = {
        "stories": args.stories, "tokens_per_story": round(tok_per_story, 1), "tokens": round(n_tok),
        "analysis_tokens_per_s_1thread": round(large["tokens"] / (large["analysis_s"] + large.get("control_s", 0.0))),
        "tagging": {k: round(v, 2) if isinstance(v, float) else v for k, v in tag.items()},
        "cache_read_stories_per_s": round(bench["tagged_stories"] / bench["tagging_s"]),
        "bytes_per_token": {"unsharded_or_merge": round(full_bpt, 1), "shard": round(lean_bpt, 1)},
        "peak_rss_mb_measured": large["peak_rss_mb"],
        "gpu_tokens_per_s": args.gpu_tokens_per_s, "rows": rows,
    }
    if args.scaling:
        out["torchrun"] = torchrun_rows(json.loads(Path(args.scaling).read_text()), n_tok, args.stories,
                                        full_bpt, lean_bpt, args.ranks)
        rows = rows + out["torchrun"]["rows"]
    for r in rows:
        print(r, flush=True)
    print(json.dumps(out))


def torchrun_rows(scaling: dict, n_tok: float, n_stories: int, bytes_per_token: float, share_bytes_per_token: float,
                  ranks: list[int]) -> dict:
    """Time and memory per rank of ``torchrun --nproc_per_node N -m tinyinterp analyze`` (see the module docstring)."""
    one = max((r for r in scaling["runs"] if r["world"] == 1), key=lambda r: r["tokens"])
    tag = scaling["tagging"]
    rank = one["ranks"][0]
    pass_s_per_tok = rank["pass_s"] / one["tokens"]
    calib_h = rank.get("calibration_s", 0.0) / 3600  # absent in runs before the calibration was split
    finish_h = (one["analysis_s"] - rank["pass_s"]) / 3600 - calib_h
    read_h = n_stories / tag["store_warm_stories_per_s"] / 3600
    tag_h = n_tok / tag["store_fresh_tokens_per_s"] / 3600
    peak = max(r["max_rank_peak_rss_mb"] for r in scaling["runs"] if r["tokens"] == one["tokens"]) * 2**20
    rows = []
    for n in ranks:
        pass_h, fixed_h = n_tok * pass_s_per_tok / n / 3600, calib_h / n + finish_h
        share = peak + share_bytes_per_token * max(n_tok / n - one["tokens"], 0) + SHARE_BYTES_PER_STORY * n_stories
        rows.append({"torchrun_ranks": n, "tagging_h": round(tag_h / n, 2), "store_read_h_rank0": round(read_h, 2),
                     "store_read_h_other_ranks": round(read_h / n, 2), "pass_h": round(pass_h, 2),
                     "fixed_h": round(fixed_h, 3), "total_h": round(tag_h / n + read_h + pass_h + fixed_h, 1),
                     "memory_rank0_gb": round((peak + bytes_per_token * (n_tok - one["tokens"])) / 2**30, 1),
                     "memory_other_ranks_gb": round(share / 2**30, 1) if n > 1 else None})
    return {"from": {"tokens": one["tokens"], "pass_s_per_token": pass_s_per_tok, "calibration_s": calib_h * 3600,
                     "finish_s": finish_h * 3600, "store_fresh_tokens_per_s": tag["store_fresh_tokens_per_s"],
                     "store_warm_stories_per_s": tag["store_warm_stories_per_s"], "peak_rss_mb": peak / 2**20,
                     "share_bytes_per_story": SHARE_BYTES_PER_STORY},
            "rows": rows}


if __name__ == "__main__":
    main()
