"""``tinyinterp analyze``: heads, neurons, probes and an HTML report for one checkpoint."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "analyze", help="classify heads, find POS-selective neurons, probe layers, write report.html",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Tag --corpus with spaCy, classify every attention head (local/semantic/sink/mixed), "
                    "find part-of-speech-selective MLP neurons (held-out AUROC, FDR, untrained control, "
                    "ablation check), fit layer-wise UPOS probes, and write heads.json/.csv, neurons.json/.csv, "
                    "probes.json, summary.json and a self-contained report.html to --out.",
        epilog="example: tinyinterp analyze checkpoints/ts-1l --corpus val.txt --out /tmp/analysis --max-stories 300")
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint folder")
    p.add_argument("--corpus", nargs="+", required=True, metavar="SRC", help="stories: files, folders, globs, hf:NAME")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-stories", type=int, default=500, help="stories to analyse")
    p.add_argument("--no-heads", action="store_true", help="skip head classification")
    p.add_argument("--no-neurons", action="store_true", help="skip the neuron analysis (and ablations)")
    p.add_argument("--no-probes", action="store_true", help="skip the probes")
    p.add_argument("--no-control", action="store_true", help="skip the untrained-model control")
    p.add_argument("--no-ablation", action="store_true", help="skip the causal ablation check")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--auroc", type=float, default=0.9, help="held-out AUROC a selective neuron needs")
    p.add_argument("--fdr", type=float, default=0.05, help="Benjamini–Hochberg false discovery rate")
    p.add_argument("--no-verify", action="store_true", help="skip the checkpoint's sha256 check")
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyinterp.analysis.neurons import NeuronConfig
    from tinyinterp.analysis.pipeline import AnalysisConfig, analyze
    from tinyinterp.checkpoint import load_model

    cfg = AnalysisConfig(
        max_stories=args.max_stories, run_heads=not args.no_heads, run_neurons=not args.no_neurons,
        run_probes=not args.no_probes, report=not args.no_report,
        ablation_tags=() if args.no_ablation else AnalysisConfig.ablation_tags,
        neurons=NeuronConfig(auroc_threshold=args.auroc, fdr=args.fdr, untrained_control=not args.no_control),
    )
    model = load_model(args.ckpt, verify=not args.no_verify)
    summary = analyze(model, args.corpus, args.out, cfg, model_name=str(args.ckpt))
    print(json.dumps({k: summary[k] for k in ("heads", "corpus", "timings") if k in summary}))
    print(f"results written to {args.out} (open {args.out}/report.html)")
    return 0
