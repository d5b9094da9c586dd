"""The lexical baselines' cost: per token id (the default) vs scoring and ranking every token (the former path).

    python benchmarks/lexical_baselines.py [--tokens 1000000] [--save benchmarks/results/lexical_baselines.json]

Data: a synthetic :class:`UnitActivations` of the analysis' shape (no text, no model pass): ``--tokens``
tokens (half of the stories held out), Zipf-distributed token ids over a 4096-id vocabulary, 18 tags (most
ids carry one tag, a fifth carry a mix, so the ambiguous-word sets are large), 200-token stories, word types
shared by pairs of ids (as " one"/"One"). ``W_E``: ``checkpoints/ts-1l``'s embedding (random when absent).
Two timed runs of :func:`lexical_baseline` in one process:

* ``per_token``: the lookup and embedding scorers with their ``score_ids`` hidden, predicting every held-out
  token (``W_E[token id]`` row by row) and ranking every token (``weighted_auroc``, scikit-learn's AP, the
  ranked story bootstrap) — what the baselines computed before the id-level path;
* ``per_id``: the default (:mod:`tinyinterp.analysis.neurons.id_scores`).

``identical``: every returned number is equal (NaN equals NaN); ``speedup`` and ``speedup_excluding_bootstrap``
are per_token / per_id seconds (``bootstrap_s`` is the resampling, reported apart by the analysis). The
machine's 1-minute load average is recorded; compare ratios, not seconds, on a shared machine. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def synthetic_units(n_tokens: int, vocab: int = 4096, n_tags: int = 18, seed: int = 0, story_len: int = 200):
    from tinyinterp.analysis.neurons.units import UnitActivations

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    ids = rng.choice(vocab, size=n_tokens, p=p / p.sum())
    purity = np.where(rng.random(vocab) < 0.8, 0.995, 0.6)[:, None]
    probs = purity * np.eye(n_tags)[rng.integers(n_tags, size=vocab)] + (1 - purity) * rng.dirichlet(np.full(n_tags, 0.05), vocab)
    tags = (rng.random(n_tokens)[:, None] > probs.cumsum(1)[ids]).sum(1).clip(0, n_tags - 1)
    story = np.arange(n_tokens) // story_len
    return UnitActivations(acts=np.zeros((n_tokens, 1), np.float32), tags=tags, token_ids=ids, words=ids // 2,
                           story=story, selection=story % 2 == 0, tag_names=[f"T{i:02d}" for i in range(n_tags)],
                           word_names=[f"w{i}" for i in range(vocab // 2)])


def embedding(vocab: int = 4096) -> np.ndarray:
    path = REPO / "checkpoints" / "ts-1l" / "model.safetensors"
    if path.exists():
        from safetensors.numpy import load_file

        return np.asarray(load_file(str(path))["embed.W_E"], dtype=np.float64)
    return np.random.default_rng(0).normal(size=(vocab, 256))


def per_token_baseline(ua, W_E, timings):
    """:func:`lexical_baseline` as it was: each scorer evaluated on its own, every token scored and ranked."""
    from tinyinterp.analysis.neurons.baselines import embedding_scorer, evaluate_scorer, lookup_scorer

    def hide(s):
        return lambda ua, train, test: s.score_ids(ua, train, ua.token_ids[test])

    look = evaluate_scorer(ua, hide(lookup_scorer()), unseen_ci=False, timings=timings)
    emb = evaluate_scorer(ua, hide(embedding_scorer(W_E)), unseen_ci=False, timings=timings)
    return {t: {"lookup": look[t], "embedding": emb[t]} for t in ua.tag_names}


def differences(a, b, path="") -> list[str]:
    if isinstance(a, dict):
        return [d for k in a for d in differences(a[k], b[k], f"{path}.{k}")] + ([path] if a.keys() != b.keys() else [])
    if isinstance(a, list):
        return [d for x, y in zip(a, b) for d in differences(x, y, path)] + ([path] if len(a) != len(b) else [])
    return [] if a == b or (math.isnan(a) and math.isnan(b)) else [f"{path}: {a!r} vs {b!r}"]


def main() -> None:
    from tinyinterp.analysis.neurons.baselines import lexical_baseline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--save", default=None)
    args = ap.parse_args()
    ua, W_E = synthetic_units(args.tokens), embedding()
    out: dict = {"tokens": args.tokens, "held_out_tokens": int((~ua.selection).sum()), "distinct_ids": int(np.unique(ua.token_ids).size),
                 "tags": ua.n_tags, "d_model": W_E.shape[1], "load_1min": os.getloadavg()[0]}
    res = {}
    for name, fn in (("per_id", lexical_baseline), ("per_token", per_token_baseline)):
        timings: dict[str, float] = {"bootstrap_s": 0.0}
        t0 = time.perf_counter()
        res[name] = fn(ua, W_E, timings=timings) if fn is lexical_baseline else fn(ua, W_E, timings)
        sec = time.perf_counter() - t0
        out[name] = {"seconds": round(sec, 2), "bootstrap_s": round(timings["bootstrap_s"], 2),
                     "seconds_excluding_bootstrap": round(sec - timings["bootstrap_s"], 2)}
    diff = differences(res["per_id"], res["per_token"])
    ratio = {k: round(out["per_token"][k] / out["per_id"][k], 2) for k in ("seconds", "seconds_excluding_bootstrap")}
    out.update(identical=not diff, differences=diff[:10], speedup=ratio["seconds"],
               speedup_excluding_bootstrap=ratio["seconds_excluding_bootstrap"], load_1min_end=os.getloadavg()[0])
    if args.save:
        Path(args.save).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))

if __name__ == "__main__":
    main()
