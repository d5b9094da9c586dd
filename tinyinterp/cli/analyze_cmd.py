"""``tinyinterp analyze``: heads, neurons, probes and an HTML report for one checkpoint.

``--shard i/n`` streams one n-th of the stories and writes mergeable statistics;
``tinyinterp analyze merge SHARD... --out DIR`` adds them and writes the full analysis
(see :mod:`tinyinterp.analysis.sharding`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MERGE = "analyze-merge"  # `tinyinterp analyze merge ...` is rewritten to this command by cli.main


def _common(p) -> None:
    p.add_argument("--no-probes", action="store_true", help="skip the probes")
    p.add_argument("--no-ablation", action="store_true",
                   help="skip the ablation (top neurons per tag vs matched random sets, on the held-out half)")
    p.add_argument("--no-identity", action="store_true",
                   help="stream the neuron statistics instead of keeping every token's activations (4 bytes x tokens x "
                        "neurons): the identity tests and lexical baselines are then reported untestable")
    p.add_argument("--no-head-effects", action="store_true",
                   help="skip the head output effects (direct logit attribution, attention by next token), the head "
                        "ablations, the paper claim and the halves check (heads_axes.json); the labels stay")
    p.add_argument("--head-ablation-stories", type=int, default=None, metavar="N",
                   help="stories for the mean/resample ablation of every head (0: skip; default: "
                        "AnalysisConfig.head_ablation_stories)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--no-verify", action="store_true", help="skip the checkpoint's sha256 check")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "analyze", help="classify heads, find POS-selective neurons, probe layers, write report.html",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Tag --corpus with spaCy, classify every attention head (local/semantic/sink/mixed), "
                    "sort MLP neurons into part-of-speech (pos) neurons, token detectors (token) and untestable rows "
                    "(held-out AUROC, identity tests, story bootstrap, BH, lexical baselines, untrained control, "
                    "matched ablation), fit layer-wise UPOS probes, and write heads.json/.csv, neurons.json/.csv, "
                    "probes.json, summary.json and a self-contained report.html to --out. "
                    "To scale out, start it with torchrun (`torchrun --nproc_per_node N -m tinyinterp analyze ...`): "
                    "the ranks split the stories and rank 0 writes --out. For schedulers without torchrun, "
                    "--shard i/n streams one n-th of the stories and writes mergeable statistics; "
                    "combine the shards with `tinyinterp analyze merge SHARD_DIR... --out DIR`. "
                    "Results are written into --out/.staging and moved in together, complete.json last: "
                    "a killed run leaves the previous results untouched.",
        epilog="example: tinyinterp analyze checkpoints/ts-1l --corpus val.txt --out /tmp/analysis --max-stories 300")
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint folder, Hugging Face model folder or hf:NAME")
    p.add_argument("--corpus", nargs="+", required=True, metavar="SRC", help="stories: files, folders, globs, hf:NAME")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-stories", type=int, default=500, help="stories to analyse (0: all)")
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="stream only stories with index %% N == I and write mergeable statistics (shard.json, "
                        "stats.safetensors) instead of results")
    p.add_argument("--no-heads", action="store_true", help="skip head classification")
    p.add_argument("--no-neurons", action="store_true", help="skip the neuron analysis (and ablations)")
    p.add_argument("--no-control", action="store_true", help="skip the untrained-model control")
    p.add_argument("--auroc", type=float, default=0.9, help="AUROC a neuron x tag needs on the selection half (candidate) and held out (replicated)")
    p.add_argument("--fdr", type=float, default=0.05, help="Benjamini–Hochberg false discovery rate (story-level p-values)")
    p.add_argument("--features", nargs="+", default=[], metavar="SAE_DIR",
                   help="SAE folders (SAELens format, trained on blocks.L.mlp.hook_post of CKPT) whose features go "
                        "through the neuron rules: features.json/.csv and a best-neuron-vs-best-feature table per tag")
    _common(p)
    p.set_defaults(func=run)

    m = sub.add_parser(
        MERGE, help="merge `analyze --shard` folders (also spelled `tinyinterp analyze merge`)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Add the statistics of every shard of one sharded analysis and write the full results to --out, "
                    "as an unsharded `tinyinterp analyze` would. The checkpoint, corpus and options are read from "
                    "the shards' shard.json; --ckpt/--corpus override paths that moved (they must hold the same "
                    "weights and stories: both are fingerprinted).",
        epilog="example: tinyinterp analyze merge /tmp/s0 /tmp/s1 --out /tmp/analysis")
    m.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="every shard folder of the run, once each")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--ckpt", default=None, help="checkpoint (default: the one recorded in the shards)")
    m.add_argument("--corpus", nargs="+", default=None, metavar="SRC", help="stories (default: as recorded)")
    _common(m)
    m.set_defaults(func=run_merge)


def _sources(specs: list[str]) -> list:
    from tinyinterp.data.readers import resolve_sources

    # --corpus names sources, never story text: a missing file is an error, not a one-line "story"
    return [s.path if s.kind == "hf" else Path(s.path).resolve() for s in resolve_sources(specs)]


def _config(options: dict):
    from tinyinterp.analysis.heads import HeadConfig
    from tinyinterp.analysis.neurons import IdentityConfig, NeuronConfig
    from tinyinterp.analysis.pipeline import AnalysisConfig

    return AnalysisConfig(
        max_stories=options["max_stories"] or None, run_heads=not options["no_heads"],
        run_neurons=not options["no_neurons"], run_probes=not options["no_probes"], report=not options["no_report"],
        ablation_tags=() if options["no_ablation"] else AnalysisConfig.ablation_tags,
        head_effects=not options.get("no_head_effects", False),
        heads=HeadConfig(output_effects=not options.get("no_head_effects", False)),  # as analyze() sets it: shards match
        head_ablation_stories=(AnalysisConfig.head_ablation_stories if options.get("head_ablation_stories") is None
                               else options["head_ablation_stories"]),
        neurons=NeuronConfig(identity=IdentityConfig(auroc_threshold=options["auroc"], fdr=options["fdr"]),
                             untrained_control=not options["no_control"],
                             in_memory=not options.get("no_identity", False)),  # shards written before the option lack it
    )


OPTIONS = ("max_stories", "no_heads", "no_neurons", "no_probes", "no_report", "no_ablation", "no_identity", "auroc", "fdr",
           "no_control", "no_head_effects", "head_ablation_stories")


def run(args) -> int:
    from tinyinterp.analysis.pipeline import analyze
    from tinyinterp.checkpoint import load_model
    from tinyinterp.errors import ConfigError

    if args.head_ablation_stories is not None and args.head_ablation_stories < 0:
        raise ConfigError(f"--head-ablation-stories {args.head_ablation_stories}: must be >= 0 (0: skip)")
    if args.max_stories is not None and args.max_stories < 0:
        raise ConfigError(f"--max-stories {args.max_stories}: must be a positive number of stories (0: all)")
    options = {k: getattr(args, k) for k in OPTIONS}
    cfg = _config(options)
    corpus = _sources(args.corpus)
    if args.shard is not None:
        from tinyinterp.analysis.sharding import parse_shard

        shard = parse_shard(args.shard)
        if args.no_heads or args.no_neurons:
            raise ConfigError("--shard needs both the head and the neuron analysis (drop --no-heads/--no-neurons)")
    model = load_model(args.ckpt, verify=not args.no_verify)
    if args.features:
        import dataclasses

        from tinyinterp.analysis.features.stage import check_saes

        if args.shard is not None:
            raise ConfigError("--features runs on the whole corpus; drop --shard (or run it after the merge)")
        check_saes(model, args.features)  # a wrong SAE fails now, in one line, not after the analysis
        cfg = dataclasses.replace(cfg, features=tuple(str(Path(f).expanduser()) for f in args.features))
    from tinyinterp.analysis.distributed import init_distributed, shutdown

    info = init_distributed(str(model.cfg.device))  # under torchrun: WORLD_SIZE > 1
    try:
        if args.shard is not None:
            if info.enabled:
                raise ConfigError("--shard is for schedulers without torchrun; under torchrun drop --shard "
                                  "(the ranks split the stories themselves)")
            return _run_shard(args, model, corpus, cfg, shard, options)
        summary = analyze(model, corpus, args.out, cfg, model_name=str(args.ckpt), dist=info)
    finally:
        shutdown(info)
    if info.is_main:
        print(json.dumps({k: summary[k] for k in ("heads", "corpus", "timings", "ranks") if k in summary}))
        if "features" in summary:
            from tinyinterp.analysis.features.stage import comparison_text

            print(comparison_text(summary["features"]))
        print(f"results written to {args.out} (open {args.out}/report.html)")
    return 0


def _run_shard(args, model, corpus, cfg, shard: tuple[int, int], options: dict) -> int:
    from itertools import islice

    from tinyinterp.analysis.corpus import tag_corpus
    from tinyinterp.analysis.sharding import run_shard
    from tinyinterp.data.readers import iter_stories

    def stories():  # streamed: a shard never holds the texts, only token ids and tags (keep_text=False)
        return islice(iter_stories([str(c) for c in corpus]), cfg.max_stories)

    i, n = shard
    tok, n_ctx = model.tokenizer, int(model.cfg.n_ctx)
    if n > 1:  # tag this shard's share first: shards running side by side fill the shared tag cache n ways
        tag_corpus((s for j, s in enumerate(stories()) if j % n == i), tok, n_ctx, keep_text=False)
    tagged = tag_corpus(stories(), tok, n_ctx, keep_text=False)  # the whole corpus, mostly cache reads by now
    ckpt = args.ckpt if str(args.ckpt).startswith("hf:") else str(Path(args.ckpt).resolve())
    meta = run_shard(model, tagged, args.out, cfg.heads, cfg.neurons, shard,
                     {"ckpt": ckpt, "corpus": [str(c) for c in corpus], "options": options})
    print(json.dumps({k: meta[k] for k in ("shard", "n_shards", "stories", "tokens")}))
    print(f"shard statistics written to {args.out}; when every shard is done: "
          f"tinyinterp analyze merge SHARD_DIR... --out DIR")
    return 0


def run_merge(args) -> int:
    from tinyinterp.analysis.pipeline import analyze
    from tinyinterp.analysis.sharding import read_shards
    from tinyinterp.checkpoint import load_model

    metas = read_shards(args.shards)
    rec = metas[0]
    options = dict(rec["options"])
    for k in ("no_probes", "no_ablation", "no_report"):  # stages that run only here may still be switched off
        options[k] = options[k] or getattr(args, k)
    if args.head_ablation_stories is not None:  # the head ablations run only here too
        options["head_ablation_stories"] = args.head_ablation_stories
    ckpt = args.ckpt or rec["ckpt"]
    corpus = _sources(args.corpus) if args.corpus else rec["corpus"]
    model = load_model(ckpt, verify=not args.no_verify)
    summary = analyze(model, corpus, args.out, _config(options), model_name=str(ckpt), shards=args.shards)
    print(json.dumps({k: summary[k] for k in ("heads", "corpus", "timings") if k in summary}))
    print(f"merged {len(metas)} shards into {args.out} (open {args.out}/report.html)")
    return 0
