"""The neuron ablation's cost: one forward pass per random set vs sets from one cached clean pass.

    python benchmarks/ablation_sets.py [--ckpt checkpoints/ts-1l] [--stories 200] [--save benchmarks/results/ablation_sets.json]

Model: the bundled checkpoint; text: its model-written ``analysis/corpus.txt`` (committed, no
TinyStories text). Ranking and matching statistics: :meth:`SelectionStats.from_units` on the
selection half; the ablation itself is the analysis' default (NOUN/VERB/ADJ, top 5 neurons, 100
held-out stories, ``batch_tokens`` of :class:`NeuronConfig`). Three timed runs in one process:

* ``before``: the former default, 20 random sets per tag, one full forward per set (``method="forward"``);
* ``same_sets_cached``: the same 20 sets from the cached clean pass (``method="auto"``); its losses
  must equal ``before``'s (``max_abs_diff_random_delta_target``) and ``per_set_speedup`` is the ratio;
* ``after``: the new default (``n_random=None``: 120 sets per tag for three tags, cached).

The machine's 1-minute load average is recorded; compare ratios, not seconds, on a shared machine.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import torch

    import tinyinterp
    from tinyinterp.analysis.neurons.config import NeuronConfig
    from tinyinterp.analysis.neurons.job import neuron_activations
    from tinyinterp.analysis.neurons.matched_ablation import AblationConfig, SelectionStats, ablation_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(REPO / "checkpoints" / "ts-1l"))
    ap.add_argument("--stories", type=int, default=200)
    ap.add_argument("--save", default=None)
    args = ap.parse_args()
    model = tinyinterp.load_model(args.ckpt)
    corpus = tinyinterp.load_corpus(Path(args.ckpt) / "analysis" / "corpus.txt", model, args.stories, progress=False)
    stats = SelectionStats.from_units(neuron_activations(model, corpus))
    base = dict(n_units=5, max_stories=100, tags=("NOUN", "VERB", "ADJ"), batch_tokens=NeuronConfig().batch_tokens)
    out: dict = {"ckpt": Path(args.ckpt).name, "stories": len(corpus.stories), "threads": torch.get_num_threads(),
                 "load_1min": os.getloadavg()[0]}
    rows = {}
    for name, cfg in [("before", AblationConfig(**base, n_random=20, method="forward")),
                      ("same_sets_cached", AblationConfig(**base, n_random=20)),
                      ("after", AblationConfig(**base))]:
        t0 = time.perf_counter()
        rows[name] = ablation_table(model, corpus, stats, cfg)
        n_sets = sum(1 + r["n_random"] for r in rows[name])
        out[name] = {"seconds": round(time.perf_counter() - t0, 2), "sets": n_sets, "method": cfg.method,
                     "p_random": [r["p_random"] for r in rows[name]], "q_random": [r["q_random"] for r in rows[name]]}
        out[name]["seconds_per_set"] = round(out[name]["seconds"] / n_sets, 4)
    diff = max(float(np.max(np.abs(np.subtract(a["random_delta_target"] + [a["delta_target"]],
                                               b["random_delta_target"] + [b["delta_target"]]))))
               for a, b in zip(rows["before"], rows["same_sets_cached"]))
    out["max_abs_diff_random_delta_target"] = diff
    out["per_set_speedup"] = round(out["before"]["seconds_per_set"] / out["same_sets_cached"]["seconds_per_set"], 2)
    out["after_vs_before_seconds"] = round(out["after"]["seconds"] / out["before"]["seconds"], 2)
    out["load_1min_end"] = os.getloadavg()[0]
    if args.save:
        Path(args.save).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
