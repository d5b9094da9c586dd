"""``make demo``: a tour of the bundled one-layer model (``python -m tinyinterp.demo``).

Loads the bundled checkpoint, prints its card, generates text, shows the precomputed head
labels and part-of-speech neurons (``checkpoints/<name>/analysis/``, computed on stories the
model itself wrote), and writes an HTML report. Everything runs offline on a CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "checkpoints" / "ts-1l"
PROMPTS = ["Once upon a time", "Lily and Tom went to", "The little dog was"]


def _print_model(model, ckpt: Path) -> None:
    """Size, validation loss and a few generations."""
    import tinyinterp

    info = json.loads((ckpt / "training.json").read_text()) if (ckpt / "training.json").exists() else {}
    c = model.cfg
    print(f"== {ckpt.name}: {c.n_layers} layer(s), d_model {c.d_model}, {c.n_heads} heads, d_mlp {c.d_mlp}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters")
    if info.get("final_eval"):
        print(f"   validation: {info['final_eval']['val_bpb']:.4f} bits/byte; trained on {info.get('tokens_seen', 0):,} tokens "
              f"in {info.get('wall_s', 0) / 60:.0f} min")
    print("\n== generations (greedy, then temperature 0.8 seed 0)")
    for p in PROMPTS:
        print(f"- {tinyinterp.generate_text(model, p, max_new_tokens=50)!r}")
        print(f"  {tinyinterp.generate_text(model, p, max_new_tokens=50, temperature=0.8)!r}")


def _analysis(model, ckpt: Path, out: Path):
    """``(heads, neurons, probes, summary)``: the precomputed analysis, else one run on its corpus; None without either."""
    import tinyinterp
    from tinyinterp.analysis.heads import HeadResults
    from tinyinterp.analysis.neurons import NeuronResults
    from tinyinterp.analysis.probes import ProbeResults

    adir = ckpt / "analysis"
    if (adir / "heads.json").exists():
        probes = ProbeResults.load(adir) if (adir / "probes.json").exists() else None
        return HeadResults.load(adir), NeuronResults.load(adir), probes, json.loads((adir / "summary.json").read_text())
    corpus = adir / "corpus.txt"
    if not corpus.exists():
        print(f"\n(no precomputed analysis in {adir}; run `tinyinterp analyze {ckpt} --corpus FILES --out DIR`)")
        return None
    summary = tinyinterp.analyze(model, [str(corpus)], out, model_name=ckpt.name)
    return HeadResults.load(out), NeuronResults.load(out), ProbeResults.load(out), summary


def _print_analysis(heads, neurons, summary: dict) -> None:
    """Head labels, the most selective neuron per tag and the k-sparse probe counts."""
    print(f"\n== attention heads ({summary['corpus']['stories']} stories the model wrote itself)")
    for r in heads.records:
        print(f"   L{r.layer}H{r.head}: {r.label:<8} positional R² {r.positional_r2 or 0:.2f}  content JS {r.content_js or 0:.3f}  "
              f"mean distance {r.mean_distance or 0:5.1f}  top category {r.top_category}")
    print("\n== most selective neuron per part of speech (held-out AUROC; category: pos = beyond token identity)")
    df = neurons.to_frame()
    if not df.empty:
        best = df.sort_values("auroc", ascending=False).groupby("tag").head(1)
        for r in best.itertuples():
            print(f"   {r.tag:<6} L{r.layer}N{r.neuron:<5} AUROC {r.auroc:.3f}  q {r.q_value:.2g}  category={r.category or 'none'}"
                  f"  ({'; '.join(r.reasons) or 'passes every identity test'})")
    sparse = summary.get("sparse_probes") or {}
    if sparse:
        print("\n== how many neurons a part of speech needs (k-sparse probes, held-out AUROC 0.9)")
        for tag, v in sparse.items():
            k = v["k_for_0.9"]
            print(f"   {tag:<6} best single neuron {v['k1_auroc']:.3f}  ->  {k if k else 'not reached with'} neurons"
                  f"  (all neurons {v['all_neurons_auroc']:.3f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("ckpt", nargs="?", default=str(DEFAULT), help="checkpoint folder (default: the bundled 1-layer model)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "demo"), help="where to write report.html")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import tinyinterp
    from tinyinterp.report import write_report

    ckpt = Path(args.ckpt)
    try:
        model = tinyinterp.load_model(ckpt)
    except tinyinterp.TinyInterpError as exc:
        print(f"error: {exc}")
        return 2
    _print_model(model, ckpt)
    out = Path(args.out)
    loaded = _analysis(model, ckpt, out)
    if loaded is None:
        return 0
    heads, neurons, probes, summary = loaded
    _print_analysis(heads, neurons, summary)
    report = write_report(out, model=model, heads=heads, neurons=neurons, probes=probes, summary=summary)
    print(f"\n== full report: {report}\n   analyse your own text: tinyinterp analyze {ckpt} --corpus FILES --out DIR")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
