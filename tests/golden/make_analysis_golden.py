"""Regenerate tests/golden/analysis_ts-1l.json.gz: ``tinyinterp.analyze`` of checkpoints/ts-1l, pinned.

    .venv/bin/python tests/golden/make_analysis_golden.py

It runs every stage (heads, neurons with the untrained control and examples, ablations,
probes, sparse probes) on the first stories of ``checkpoints/ts-1l/analysis/corpus.txt``
(written by the model itself, not TinyStories text) with settings small enough for about a
minute on one CPU thread, and stores every JSON file ``analyze`` writes (timings dropped).
``tests/test_golden.py`` reruns it and compares (floats to rel 1e-4): refactors of the
analysis code must leave the output unchanged. Regenerate only for a deliberate change of
the analysis, and say so in the commit.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "checkpoints" / "ts-1l"
CORPUS = CKPT / "analysis" / "corpus.txt"
GOLDEN = Path(__file__).with_name("analysis_ts-1l.json.gz")
FILES = ("heads.json", "heads_meta.json", "heads_axes.json", "neurons.json", "neurons_summary.json", "neuron_examples.json",
         "ablation.json", "probes.json", "sparse_probes.json", "summary.json")


def config():
    import tinyinterp

    return tinyinterp.AnalysisConfig(
        max_stories=24, report=False, ablation_neurons=2, ablation_random=3,
        heads=tinyinterp.HeadConfig(calibration_stories=8, detector_stories=2, n_permutations=199),
        neurons=tinyinterp.NeuronConfig(calib_tokens=2048, n_bins=32, n_examples=2, max_example_neurons=4,
                                        n_logit_tokens=2, identity=tinyinterp.IdentityConfig(min_support=5, n_boot=200)),
        probes=tinyinterp.ProbeConfig(max_tokens=800, max_iter=50),
    )


def compute() -> dict:
    """Every JSON file of the analysis, by file name (``summary.json`` without its timings)."""
    import torch

    import tinyinterp

    torch.set_num_threads(1)  # float sums in a fixed order, as in the test run
    model = tinyinterp.load_model(CKPT)
    with tempfile.TemporaryDirectory() as tmp:
        tinyinterp.analyze(model, [CORPUS], tmp, config(), model_name="checkpoints/ts-1l", progress=False)
        out = {name: json.loads((Path(tmp) / name).read_text()) for name in FILES}
    out["summary.json"].pop("timings")
    return out


def main() -> None:
    GOLDEN.write_bytes(gzip.compress(json.dumps(compute(), sort_keys=True).encode("utf-8"), mtime=0))
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
