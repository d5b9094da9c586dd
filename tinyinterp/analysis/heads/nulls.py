"""Null heads for the two label axes: where the thresholds of :mod:`tinyinterp.analysis.heads.axes` come from.

A threshold on an axis is the 99th percentile of that axis over null heads that by construction
lack what the axis measures, computed once on the evaluation text and written to
``docs/head_thresholds.json`` (``python -m tinyinterp.analysis.heads.nulls --corpus FILES --out
docs/head_thresholds.json``). None of the null heads is a head of a bundled model:

* **untrained** — a model of the same shape as the one analysed, random initialisation
  (TransformerLens' init; several seeds): attention from random weights, no learned position
  or content preference. Null for both axes and for the category lift.
* **position-only surrogates** (:func:`surrogate_model`) — heads whose attention logit is a
  function of the offset ``q - k`` only (previous token, fixed offsets, exponential decays of
  several widths, windows): null for the content axis and the lift (their pattern cannot depend
  on tokens).
* **content-only surrogates** — heads whose logit is a random score of the key's token id
  (several scales), the same for every position: null for the positional axis.

The same module builds **mixed** surrogates (offset logit + token score) used by the tests to
check that a head with both components gets both attributes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

# offset logit shapes f(d), d = q - k >= 0, of the position-only surrogates
POSITION_SHAPES: dict[str, callable] = {
    "prev": lambda d: np.where(d == 1, 0.0, -8.0),
    "self": lambda d: np.where(d == 0, 0.0, -8.0),
    "offset2": lambda d: np.where(d == 2, 0.0, -8.0),
    "prev_soft": lambda d: -2.0 * np.abs(d - 1.0),
    "decay1": lambda d: -d / 1.0,
    "decay4": lambda d: -d / 4.0,
    "decay16": lambda d: -d / 16.0,
    "decay64": lambda d: -d / 64.0,
    "window4": lambda d: np.where(d < 4, 0.0, -8.0),
    "window32": lambda d: np.where(d < 32, 0.0, -8.0),
}
CONTENT_SCALES = (0.5, 1.0, 2.0, 4.0)  # std of the random per-token logit of the content-only surrogates


@dataclass
class SurrogateSpec:
    """One surrogate head: an offset shape (or None) plus a random token score of std ``content`` (0: none)."""

    name: str
    shape: str | None
    content: float


def default_specs(seeds: int = 2) -> list[SurrogateSpec]:
    """Every position-only shape, and ``seeds`` content-only heads per scale."""
    specs = [SurrogateSpec(f"pos:{k}", k, 0.0) for k in POSITION_SHAPES]
    specs += [SurrogateSpec(f"content:{s}:{i}", None, s) for s in CONTENT_SCALES for i in range(seeds)]
    return specs


def surrogate_model(tokenizer, d_vocab: int, n_ctx: int, specs: list[SurrogateSpec], seed: int = 0):
    """A one-layer attention-only model, one head per spec, no LayerNorm, no attention scale.

    Residual: one-hot position (``0..n_ctx-1``), a constant-1 dim, one token-score dim per head.
    A head's query is ``[one-hot q, 1]``, its key ``[f(q - k) for every q, score(token_k)]``.
    """
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    H = len(specs)
    d_model = n_ctx + 1 + H
    cfg = HookedTransformerConfig(n_layers=1, d_model=d_model, n_heads=H, d_head=n_ctx + 1, n_ctx=n_ctx,
                                  d_vocab=d_vocab, attn_only=True, normalization_type=None, use_attn_scale=False,
                                  act_fn="gelu_new", seed=seed)
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    rng = np.random.default_rng(seed)
    d = np.arange(n_ctx)[:, None] - np.arange(n_ctx)[None, :]  # [q, k]
    one = n_ctx
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.pos_embed.W_pos[:, :n_ctx] = torch.eye(n_ctx)
        model.embed.W_E[:, one] = 1.0
        attn = model.blocks[0].attn
        for h, spec in enumerate(specs):
            attn.b_Q[h, n_ctx] = 1.0  # query dim n_ctx: constant 1, meets the key's token score
            if spec.shape is not None:
                F = POSITION_SHAPES[spec.shape](np.maximum(d, 0).astype(np.float64))  # F[q, k]
                attn.W_Q[h, :n_ctx, :n_ctx] = torch.eye(n_ctx)  # q_i = e_i
                attn.W_K[h, :n_ctx, :n_ctx] = torch.as_tensor(F.T.copy(), dtype=torch.float32)  # k_j[i] = W_K[j, i] = F[i, j]
            if spec.content > 0:
                model.embed.W_E[:, one + 1 + h] = torch.as_tensor(rng.normal(0.0, spec.content, d_vocab), dtype=torch.float32)
                attn.W_K[h, one + 1 + h, n_ctx] = 1.0
    model.eval()
    return model


def untrained_like(model, seed: int):
    """A random-init ``HookedTransformer`` of ``model``'s shape with its tokenizer."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    d = dict(model.cfg.to_dict())  # to_dict() can be the config's own __dict__: never edit it
    d["seed"] = seed
    for k in ("device", "n_params", "n_devices", "dtype"):
        d.pop(k, None)
    fresh = HookedTransformer(HookedTransformerConfig(**d), tokenizer=getattr(model, "tokenizer", None))
    fresh.eval()
    return fresh


def null_heads(model, corpus, specs: list[SurrogateSpec] | None = None, untrained_seeds: tuple[int, ...] = (0, 1, 2),
               progress: bool = False) -> list[dict]:
    """Axis values of every null head: untrained models of ``model``'s shape and the surrogates.

    Each row: ``source`` (``untrained`` / ``surrogate``), ``name``, ``positional_null`` and
    ``content_null`` (whether the head counts as a null for that axis), and the axis values of
    :func:`tinyinterp.analysis.heads.axes.axis_values`.
    """
    from tinyinterp.analysis.heads.axes import axis_values
    from tinyinterp.analysis.heads.classify import HeadConfig, classify_heads

    cfg = HeadConfig(progress=progress)

    specs = specs if specs is not None else default_specs()
    rows = []
    for s in untrained_seeds:
        res = classify_heads(untrained_like(model, s), corpus, cfg)
        for v in axis_values(res):
            rows.append({"source": "untrained", "name": f"seed{s}:L{v['layer']}H{v['head']}",
                         "positional_null": True, "content_null": True, **v})
    if not specs:
        return rows
    sur = surrogate_model(model.tokenizer, model.cfg.d_vocab, model.cfg.n_ctx, specs)
    res = classify_heads(sur, corpus, cfg)
    for spec, v in zip(specs, axis_values(res)):
        rows.append({"source": "surrogate", "name": spec.name, "positional_null": spec.shape is None,
                     "content_null": spec.content == 0, **v})
    return rows


def derive_thresholds(rows: list[dict], quantile: float = 0.99) -> dict:
    """``quantile`` of each axis over its null heads (see the module docstring)."""
    def q(key: str, which: str) -> float:
        vals = np.array([r[key] for r in rows if r[which] and r[key] is not None and np.isfinite(r[key])])
        return float(np.quantile(vals, quantile)) if len(vals) else float("nan")

    return {"positional_min_r2": q("positional_r2", "positional_null"),
            "content_min_js": q("content_js", "content_null"),
            "min_lift": q("max_lift", "content_null"),
            "previous_token_null_q99": q("tl_previous_token", "positional_null"),  # reported beside the fixed 0.4
            "quantile": quantile,
            "n_positional_null": sum(r["positional_null"] for r in rows),
            "n_content_null": sum(r["content_null"] for r in rows)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Derive the head-label thresholds from null heads (no bundled model's heads are scored).")
    ap.add_argument("--shape-of", nargs="+", default=["checkpoints/ts-1l", "checkpoints/ts-4l"],
                    help="checkpoints whose SHAPE and tokenizer the untrained nulls copy (their weights are not used)")
    ap.add_argument("--corpus", nargs="+", required=True)
    ap.add_argument("--max-stories", type=int, default=300)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from tinyinterp import load_corpus, load_model
    from tinyinterp.atomic import atomic_path

    logging.basicConfig(level=logging.INFO)
    torch.manual_seed(0)
    rows, corpus = [], None
    for i, path in enumerate(args.shape_of):
        shape = load_model(path)
        if corpus is None:
            corpus = load_corpus(args.corpus, shape, max_stories=args.max_stories)
        specs = default_specs() if i == 0 else []  # surrogates depend on n_ctx and the tokenizer only
        for r in null_heads(shape, corpus, specs if specs else [], progress=True):
            rows.append({"shape_of": path, **r})
        del shape
    rows = [r for r in rows if r["source"] == "untrained" or r["shape_of"] == args.shape_of[0]]
    out = {"thresholds": derive_thresholds(rows), "rows": rows, "corpus": [str(c) for c in args.corpus],
           "max_stories": args.max_stories, "command": "python -m tinyinterp.analysis.heads.nulls " + " ".join(sys.argv[1:] if argv is None else argv)}
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(out, indent=1))
    print(json.dumps(out["thresholds"], indent=1))


if __name__ == "__main__":
    main()
