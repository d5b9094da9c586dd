"""Analysis throughput and memory: streaming head + neuron analysis vs a bare forward pass.

    python benchmarks/analysis_throughput.py [--sizes 100000 1000000] [--threads 1] [--separate] [--probes]

Model: ``checkpoints/ts-1l`` when it exists, else a random-init model of the same shape
(preset ``cpu-1l``, vocab 4096) with a byte-level BPE trained on the benchmark stories
(cached under ``$TINYINTERP_CACHE/bench``). Text: genuine TinyStories read at run time from
``../shared/data/tinystories/*.txt`` (or ``--data``), else template stories from
``tests/support/stories.py``. Stories are taken in order until each size (tokens the model
sees: BOS included, cut at ``n_ctx``) is reached.

Threads: ``--threads`` sets torch's and (``threadpoolctl``) numpy's BLAS threads in each child, so
the analysis (whose decision runs numpy) and the forward get the same. Steps. (1) The parent tags the largest corpus with spaCy once (``tagging_s``: cold when the
tag cache is empty, else a cache read). (2) For each size a fresh child process loads the
model, reads the tagged corpus back from the cache (``load_tagged_s``), runs the analysis,
records its peak RSS at the end of the analysis and of the control (``VmHWM``, the
high-water mark of the child's own address space; not ``ru_maxrss``, which on Linux keeps
the parent's RSS across fork+exec), then times a bare ``model(tokens)`` forward (logits
included, ``torch.inference_mode``) over the same stories, padded into the same batches of
4096 tokens (``--forward-reps`` times, median kept): ``forward_s``. A second fresh child times
the same bare forward alone (``forward_fresh_s``): the ratio ``overhead_vs_forward`` divides
by it, because the forward's speed depends on the allocator's history (glibc's dynamic mmap
threshold and heap): run after the analysis in its process it measured 53–73 s at 1M tokens
across runs, alone in a fresh process 76–82 s (2026-12-01). The analysis runs in a fresh
process too, so fresh against fresh compares like with like; ``overhead_vs_forward_after_analysis``
keeps the earlier reading (the forward after the analysis, which every run before 2026-12-01 09:50
UTC used). Separate processes make the peaks
comparable; identical runs still differ by a few percent (allocator), so ``--rss-reps - 1``
more children per size repeat only the load + analysis + control, and the median peak is
kept (every peak is reported).

"Analysis" = what ``tinyinterp analyze`` runs without ablations and probes: :func:`classify_heads`
(attention scores, the two label axes and the head output effects: direct logit attribution by
next-token group and attention conditioned on the next token) + :func:`find_pos_neurons`, with their
default configs, run as :func:`tinyinterp.analysis.pipeline.heads_and_neurons` (one shared streaming
forward pass; by default the neuron job keeps every analysed token's activations for the exact decision).
The exact neuron decision (identity rules: exact AUROCs on both halves, unseen-type AUROCs, top
activations, AP; lexical baselines: the token-id lookup and the embedding probe) runs on the kept
activations at the end of the pass and is part of ``analysis_s`` (its parts in ``decision_breakdown_s``).
Reported apart as ``bootstraps_identity_s`` (``overhead_vs_forward_with_identity`` includes them): the
resampling only, i.e. the head claim's bootstraps (:func:`~tinyinterp.analysis.heads.claims.analyse_heads`
with no ablation and no halves check; no forward pass) and the neuron decision's story and token-id
bootstraps (timed by the job as ``decision_bootstraps_s`` and subtracted from ``analysis_s``). The head ablations
and the halves check (extra forward passes by design) are not run here: ``tinyinterp analyze`` reports
their cost as ``timings.head_ablation_s`` / ``head_halves_s``. ``--separate`` also times the head and
neuron functions called one after the other. The untrained control (a second, random-init model
analysed over the same corpus; on by default in ``NeuronConfig``) is timed on its own:
``overhead_vs_forward`` (the target, ≤ 2) excludes it, ``overhead_vs_forward_with_control``
includes it. Probes (``--probes``) read a capped number of tokens and are reported apart.
Soak: the child records its RSS after every batch of the shared pass; the pass streams the
selection half, then the held-out half, each sorted by length (the same mix of batch shapes),
so ``soak.drift`` = the held-out half's peak / the selection half's peak is ≈ 1 when memory is
flat and > 1 when it creeps with the number of batches (target ≤ 1.05 at ≥ 1M tokens).
The top-level figures are those of the largest size. The last line printed is one JSON object
(``--save FILE`` also writes it to a file, which ``benchmarks/scale_out.py`` extrapolates).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinystories"
CHECKPOINT = REPO / "checkpoints" / "ts-1l"
VOCAB = 4096


def rss_mb() -> float:
    """Current resident memory of this process (MiB), VmRSS."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024.0 for line in fh if line.startswith("VmRSS:"))


class PassRss:
    """The soak check: RSS after every batch of the shared streaming pass, by group.

    The pass streams the selection half, then the held-out half, each sorted by length, so
    the two halves run the same mix of batch shapes: with flat memory the held-out half peaks
    no higher than the selection half (``drift`` = its peak / the selection half's peak ≈ 1).
    Installed by wrapping ``tinyinterp.analysis.engine``'s ``PassBatch`` and ``run_hooked`` (which the
    calibration passes share), counting only batches inside the shared pass's ``run_pass`` (:meth:`tinyinterp.analysis.sharding.Jobs.stream`).
    """

    def __init__(self):
        self.by_group: dict[int, list[float]] = {}

    def __enter__(self) -> "PassRss":
        import tinyinterp.analysis.engine as stream
        import tinyinterp.analysis.sharding as pipeline  # where the shared pass (Jobs.stream) calls run_pass

        self._stream, self._pipeline = stream, pipeline
        self._saved = (stream.PassBatch, stream.run_hooked, pipeline.run_pass)
        rec, group, active = self, {"g": 0}, {"on": False}

        import dataclasses

        @dataclasses.dataclass
        class Recorded(stream.PassBatch):
            def __post_init__(self):
                group["g"] = self.group

        def run_hooked(*a, **k):
            self._saved[1](*a, **k)
            if active["on"]:
                rec.by_group.setdefault(group["g"], []).append(rss_mb())

        def run_pass(*a, **k):
            active["on"] = True
            try:
                return self._saved[2](*a, **k)
            finally:
                active["on"] = False

        stream.PassBatch, stream.run_hooked, pipeline.run_pass = Recorded, run_hooked, run_pass
        return self

    def __exit__(self, *exc) -> None:
        self._stream.PassBatch, self._stream.run_hooked, self._pipeline.run_pass = self._saved

    def summary(self) -> dict:
        peaks = {g: max(v) for g, v in sorted(self.by_group.items())}
        first, last = peaks.get(0, math.nan), peaks.get(max(peaks), math.nan) if peaks else math.nan
        return {"batches": {g: len(v) for g, v in self.by_group.items()}, "peak_rss_by_half_mb": peaks,
                "rss_end_mb": self.by_group[max(peaks)][-1] if peaks else math.nan, "drift": last / first}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB): VmHWM of the current address space.

    Not ``ru_maxrss``: on Linux it survives fork+exec, so a child would report at least the
    parent's RSS at the moment it was started.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB; macOS: bytes (rough)


def story_source(data: str) -> tuple[str, list[str]]:
    files = sorted(glob.glob(os.path.join(data, "*.txt")))
    return ("tinystories", files) if files else ("templates", [])


def read_stories(files: list[str], n: int | None) -> list[str]:
    """The first ``n`` stories of ``files`` (or ``n`` template stories when there are no files)."""
    if files:
        from tinyinterp.data.readers import load_stories

        return load_stories(files, max_stories=n)
    sys.path.insert(0, str(REPO))
    from tests.support.stories import make_stories

    return make_stories(n or 20_000)


def get_model(files: list[str]):
    """(model, description): the bundled checkpoint, or a random-init cpu-1l model with a cached BPE."""
    import torch

    if CHECKPOINT.is_dir():
        import tinyinterp

        return tinyinterp.load_model(CHECKPOINT), "checkpoints/ts-1l"
    from transformer_lens import HookedTransformer

    from tinyinterp.cache import cache_dir
    from tinyinterp.models.hooked import hooked_config
    from tinyinterp.data.tokenizer import load_tokenizer, train_bpe
    from tinyinterp.models import preset_config

    key = hashlib.sha256(json.dumps([[Path(f).name, os.path.getsize(f)] for f in files] + [VOCAB]).encode()).hexdigest()
    tok_dir = cache_dir("bench") / f"bpe-{key[:16]}"
    if not (tok_dir / "tokenizer.json").exists():
        train_bpe(read_stories(files, 6000), tok_dir, vocab_size=VOCAB)
    torch.manual_seed(0)
    cfg = preset_config("cpu-1l", VOCAB)
    model = HookedTransformer(hooked_config(cfg), tokenizer=load_tokenizer(tok_dir), move_to_device=False)
    return model.eval(), "random-init cpu-1l + BPE trained on the benchmark stories"


def plan(files: list[str], model, sizes: list[int]) -> dict[int, dict[str, int]]:
    """Stories needed to reach each size (tokens the model sees: BOS + text, cut at n_ctx)."""
    n_ctx, want = model.cfg.n_ctx, sorted(sizes)
    texts = read_stories(files, None) if files else read_stories([], max(sizes) // 40)
    out: dict[int, dict[str, int]] = {}
    total, i, chunk = 0, 0, 512
    while len(out) < len(want) and i < len(texts):
        ids = model.tokenizer(texts[i:i + chunk], add_special_tokens=False)["input_ids"]
        for x in ids:
            total += min(len(x) + 1, n_ctx)
            i += 1
            for s in want:
                if s not in out and total >= s:
                    out[s] = {"stories": i, "tokens": total}
    missing = [s for s in want if s not in out]
    if missing:
        raise SystemExit(f"not enough text for {missing} tokens (have {total}); pass --data with more stories")
    return out


# ----------------------------------------------------------------------------------------------- child


def bare_forward(model, corpus, n_reps: int) -> tuple[list[float], list[float], int]:
    """Wall and CPU seconds of ``n_reps`` bare ``model(tokens)`` passes over ``corpus`` in the analysis's batches
    (4096 tokens, built before timing; one warm-up call first), and the padded tokens per pass."""
    import numpy as np
    import torch

    from tinyinterp.analysis.engine import plan_batches

    lengths = np.minimum(corpus.lengths(), model.cfg.n_ctx)
    batches = [torch.from_numpy(corpus.packed().padded("tokens", idx, int(lengths[idx].max()), fill=0))
               for idx in plan_batches(lengths, 4096)]
    reps, cpu = [], []
    with torch.inference_mode():
        model(batches[0][:1])  # warm-up
        for _ in range(n_reps):
            t, c = time.perf_counter(), time.process_time()
            for tokens in batches:
                model(tokens)
            reps.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return reps, cpu, int(sum(b.numel() for b in batches))


def child(args: argparse.Namespace) -> dict:
    import dataclasses

    import torch

    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # numpy's BLAS too: the analysis gets the threads the forward gets
    from tinyinterp.analysis.heads import HeadConfig, classify_heads
    from tinyinterp.analysis.neurons import untrained_copy
    from tinyinterp.analysis.neurons import NeuronConfig, find_pos_neurons
    from tinyinterp.analysis.pipeline import heads_and_neurons
    from tinyinterp.analysis.corpus import corpus_from_texts

    _, files = story_source(args.data)
    model, _ = get_model(files)
    rss = {"after_model": peak_rss_mb()}
    texts = read_stories(files, args.n_stories)
    t = time.perf_counter()
    corpus = corpus_from_texts(texts, model, progress=False)
    load_s = time.perf_counter() - t
    del texts
    if args.forward_only:  # a fresh process: the allocator as a user's bare forward finds it
        reps, _, _ = bare_forward(model, corpus, args.forward_reps)
        return {"forward_fresh_s": statistics.median(reps), "forward_fresh_reps_s": reps}
    rss["after_load"] = peak_rss_mb()
    out: dict = {"stories": len(corpus), "tokens": int(corpus.n_tokens), "load_tagged_s": load_s,
                 "n_cached": corpus.meta.get("n_cached")}
    hcfg = HeadConfig(progress=False)
    ncfg = NeuronConfig(untrained_control=False)

    t, c = time.perf_counter(), time.process_time()
    with PassRss() as soak:
        heads, neurons = heads_and_neurons(model, corpus, hcfg, ncfg)
    out["analysis_s"], out["analysis_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    out["soak"] = soak.summary()
    rss["after_analysis"] = peak_rss_mb()
    out["heads_labels"] = heads.meta["labels"]
    out["pos_neurons"] = neurons.summary["n_pos_neurons"]
    out["neuron_mode"] = neurons.summary.get("mode")
    from tinyinterp.analysis.heads.claims import analyse_heads

    t = time.perf_counter()
    analyse_heads(model, corpus, heads=heads, config=hcfg, ablation_stories=0, halves=False)
    claim_s = time.perf_counter() - t
    # the exact neuron decision (identity rules, lexical baselines) runs on the activations the pass kept, inside
    # heads_and_neurons, and counts as analysis; only its resampling (story / token-id bootstraps, timed by the
    # job as decision_bootstraps_s) is reported apart, with the head claim's bootstraps
    decision = {k: float(neurons.timings.get(k, 0.0))
                for k in ("identity_rules_s", "lexical_baselines_s", "decision_bootstraps_s", "examples_s")}
    boots = decision["decision_bootstraps_s"]
    out["decision_breakdown_s"] = decision  # identity_rules_s and lexical_baselines_s include the bootstraps
    out["bootstraps_identity_s"] = {"head_claim_bootstraps_s": claim_s, "neuron_decision_bootstraps_s": boots,
                                    "neuron_identity_s": claim_s + boots}
    out["analysis_s"] -= boots
    out["analysis_cpu_s"] -= boots  # approximately: the resampling runs single-threaded numpy
    del heads, neurons
    if args.control:
        t = time.perf_counter()
        twin = untrained_copy(model, ncfg.control_seed)
        ctrl = find_pos_neurons(twin, corpus, dataclasses.replace(ncfg, n_examples=0), label="untrained control")
        out["control_s"] = time.perf_counter() - t
        out["control_pos_neurons"] = ctrl.summary["n_pos_neurons"]
        del twin, ctrl
        rss["after_control"] = peak_rss_mb()
    out["peak_rss_mb"] = peak_rss_mb()
    out["rss_checkpoints_mb"] = rss
    if args.memory_only:
        return out
    if args.separate:  # the same two analyses as separate calls (two forward passes over the corpus)
        t = time.perf_counter()
        classify_heads(model, corpus, hcfg)
        out["separate_heads_s"] = time.perf_counter() - t
        t = time.perf_counter()
        find_pos_neurons(model, corpus, ncfg)
        out["separate_neurons_s"] = time.perf_counter() - t

    reps, cpu, padded = bare_forward(model, corpus, args.forward_reps)
    out["forward_s"] = statistics.median(reps)
    out["forward_cpu_s"] = statistics.median(cpu)
    out["forward_reps_s"] = reps
    out["forward_padded_tokens"] = padded
    if args.probes:
        from tinyinterp.analysis.probes import ProbeConfig, probe_layers

        t = time.perf_counter()
        probe_layers(model, corpus, ProbeConfig())
        out["probes_s"] = time.perf_counter() - t
    return out


# ---------------------------------------------------------------------------------------------- parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="corpus sizes in tokens")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child (default 1)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder of TinyStories .txt files")
    ap.add_argument("--no-control", dest="control", action="store_false", help="skip timing the untrained control")
    ap.add_argument("--probes", action="store_true", help="also time the probes (capped token count; reported apart)")
    ap.add_argument("--separate", action="store_true",
                    help="also time classify_heads and find_pos_neurons as separate calls (two forward passes)")
    ap.add_argument("--forward-reps", type=int, default=2, help="timed bare-forward passes (median kept)")
    ap.add_argument("--rss-reps", type=int, default=3,
                    help="child processes per size whose peak RSS is measured (median kept; the first also times)")
    ap.add_argument("--save", default=None, help="also write the final JSON to this file (read by benchmarks/scale_out.py)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n-stories", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--forward-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    import torch

    torch.set_num_threads(args.threads)
    kind, files = story_source(args.data)
    model, model_desc = get_model(files)
    sizes = plan(files, model, args.sizes)
    big = max(sizes)
    print(f"text: {kind}; model: {model_desc}; sizes: {sizes}", flush=True)

    from tinyinterp.analysis.corpus import corpus_from_texts

    t = time.perf_counter()
    corpus = corpus_from_texts(read_stories(files, sizes[big]["stories"]), model, progress=False)
    tagging = {"tagging_s": time.perf_counter() - t, "tagged_stories": len(corpus),
               "tagged_fresh": corpus.meta["n_tagged"], "from_cache": corpus.meta["n_cached"],
               "spacy_model": corpus.spacy_model, "alignment_coverage": corpus.coverage}
    del corpus
    print(f"tagging: {tagging}", flush=True)

    def run_child(size: int, memory_only: bool, forward_only: bool = False) -> dict:
        cmd = [sys.executable, __file__, "--child", "--n-stories", str(sizes[size]["stories"]),
               "--threads", str(args.threads), "--data", args.data, "--forward-reps", str(args.forward_reps)]
        cmd += [] if args.control else ["--no-control"]
        cmd += ["--forward-only"] if forward_only else []
        cmd += ["--memory-only"] if memory_only else (["--probes"] if args.probes else []) + (
            ["--separate"] if args.separate else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"child for {size} tokens failed (exit {proc.returncode})")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    runs = {}
    for size in sorted(sizes):
        r = run_child(size, memory_only=False)
        extra = [run_child(size, memory_only=True) for _ in range(args.rss_reps - 1)]
        r["peak_rss_runs_mb"] = [r["peak_rss_mb"]] + [e["peak_rss_mb"] for e in extra]
        r["peak_rss_analysis_runs_mb"] = [x["rss_checkpoints_mb"]["after_analysis"] for x in [r, *extra]]
        r["peak_rss_mb"] = statistics.median(r["peak_rss_runs_mb"])  # the allocator makes single peaks vary by a few %
        r.update(run_child(size, memory_only=False, forward_only=True))
        # the ratio's reference: the bare forward in a fresh process, as the analysis ran (cold allocator); the
        # same forward timed after the analysis in its process (warm heap) is kept as forward_s, with its ratio
        r["overhead_vs_forward_after_analysis"] = r["analysis_s"] / r["forward_s"]
        r["overhead_vs_forward"] = r["analysis_s"] / r["forward_fresh_s"]
        r["overhead_vs_forward_cpu"] = r["analysis_cpu_s"] / r["forward_cpu_s"]
        r["analysis_tokens_per_s"] = r["tokens"] / r["analysis_s"]
        r["forward_tokens_per_s"] = r["tokens"] / r["forward_s"]
        if "bootstraps_identity_s" in r:
            r["overhead_vs_forward_with_identity"] = (r["analysis_s"] + r["bootstraps_identity_s"]["neuron_identity_s"]) / r["forward_s"]
        if "control_s" in r:
            r["overhead_vs_forward_with_control"] = (r["analysis_s"] + r["control_s"]) / r["forward_s"]
        if "separate_heads_s" in r:
            r["overhead_vs_forward_separate_calls"] = (r["separate_heads_s"] + r["separate_neurons_s"]) / r["forward_s"]
        runs[size] = r
        print(f"{size} tokens: " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}),
              flush=True)

    small, large = runs[min(runs)], runs[max(runs)]
    out = {
        "model": model_desc, "text": kind, "threads": args.threads, "device": "cpu",
        "sizes": {str(k): v for k, v in runs.items()},
        **tagging,
        "overhead_vs_forward": large["overhead_vs_forward"],
        "overhead_vs_forward_after_analysis": large["overhead_vs_forward_after_analysis"],
        "overhead_vs_forward_with_control": large.get("overhead_vs_forward_with_control"),
        "overhead_vs_forward_with_identity": large.get("overhead_vs_forward_with_identity"),
        "bootstraps_identity_s": large.get("bootstraps_identity_s"),
        "analysis_tokens_per_s": large["analysis_tokens_per_s"],
        "forward_tokens_per_s": large["forward_tokens_per_s"],
        "peak_rss_mb_small": small["peak_rss_mb"], "peak_rss_mb_large": large["peak_rss_mb"],
        "rss_growth": large["peak_rss_mb"] / small["peak_rss_mb"],
        "rss_growth_analysis_only": (statistics.median(large["peak_rss_analysis_runs_mb"])
                                     / statistics.median(small["peak_rss_analysis_runs_mb"])),
        "rss_reps": args.rss_reps,
    }
    out["soak"] = {"tokens": large["tokens"], **large["soak"]}  # RSS over the longest pass: flat means drift ~ 1
    out["targets_met"] = {"overhead_vs_forward<=2": out["overhead_vs_forward"] <= 2.0,
                          "rss_growth<=1.10": out["rss_growth"] <= 1.10,
                          "soak_drift<=1.05": out["soak"]["drift"] <= 1.05}
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
