"""``tinyinterp eval``, ``generate``, ``info`` and ``presets``."""

from __future__ import annotations

import argparse
import json

from tinyinterp.errors import TinyInterpError


def add_parsers(sub) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("eval", help="loss and bits per byte of a checkpoint on a corpus", formatter_class=fmt,
                       description="Evaluate next-token loss (nats/token) and bits per byte of CKPT on --data. "
                                   "Stories are <|endoftext|>-prefixed and cut into non-overlapping context windows.")
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint folder")
    p.add_argument("--data", nargs="+", required=True, metavar="SRC", help="files, folders, globs or hf:NAME[:SPLIT]")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--max-stories", type=int, default=None, help="evaluate only the first N stories")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-verify", action="store_true", help="skip the manifest's sha256 check")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("generate", help="continue a prompt with a checkpoint", formatter_class=fmt,
                       description="Generate text greedily (--temperature 0) or by sampling with a seed.")
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint folder")
    p.add_argument("--prompt", action="append", required=True, help="prompt text (repeat for several)")
    p.add_argument("--max-new-tokens", type=int, default=80, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-verify", action="store_true", help="skip the manifest's sha256 check")
    p.set_defaults(func=run_generate)

    p = sub.add_parser("info", help="show a checkpoint's shape, data and evaluation",
                       description="Print a checkpoint's config and training summary as JSON.")
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint folder")
    p.add_argument("--no-verify", action="store_true", help="skip the manifest's sha256 check")
    p.set_defaults(func=run_info)

    p = sub.add_parser("presets", help="list model presets", description="List the model shapes --preset accepts.")
    p.set_defaults(func=run_presets)


def _positive(name: str, v, allow_zero: bool = False) -> None:
    if v is not None and (v < 0 or (v == 0 and not allow_zero)):
        raise TinyInterpError(f"--{name.replace('_', '-')}={v}: must be {'>= 0' if allow_zero else '> 0'}")


def run_eval(args) -> int:
    from tinyinterp.evaluate import evaluate_checkpoint

    _positive("max_stories", args.max_stories)
    _positive("batch_size", args.batch_size)
    res = evaluate_checkpoint(args.ckpt, args.data, batch_size=args.batch_size, max_stories=args.max_stories,
                              device=args.device, verify=not args.no_verify)
    out = {"checkpoint": args.ckpt, **res.to_json()}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.ckpt}: loss {res.loss:.4f} nats/token, {res.bits_per_byte:.4f} bits/byte "
              f"({res.tokens:,} tokens, {res.bytes:,} bytes, {res.stories:,} stories)")
    return 0


def run_generate(args) -> int:
    from tinyinterp.checkpoint import load_fast_model
    from tinyinterp.generate import generate

    _positive("max_new_tokens", args.max_new_tokens, allow_zero=True)
    _positive("top_k", args.top_k)
    model, tok = load_fast_model(args.ckpt, verify=not args.no_verify)
    results = []
    for prompt in args.prompt:
        text = generate(model, tok, prompt, model.cfg["n_ctx"], args.max_new_tokens, args.temperature,
                        top_k=args.top_k, seed=args.seed)
        results.append({"prompt": prompt, "text": text})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(r["text"])
            print()
    return 0


def run_info(args) -> int:
    from pathlib import Path

    from tinyinterp.checkpoint import TRAINING, load_model

    model = load_model(args.ckpt, verify=not args.no_verify)
    info = {"checkpoint": args.ckpt, "n_params": sum(p.numel() for p in model.parameters()),
            "config": {k: getattr(model.cfg, k) for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab")}}
    tp = Path(args.ckpt) / TRAINING
    if tp.exists():
        t = json.loads(tp.read_text())
        info.update({k: t.get(k) for k in ("command", "step", "tokens_seen", "wall_s", "final_eval")})
    print(json.dumps(info, indent=2, default=str))
    return 0


def run_presets(args) -> int:
    from tinyinterp.models.presets import PRESET_NOTES, PRESETS

    print(f"{'preset':<11} {'L':>2} {'d_model':>7} {'heads':>5} {'d_head':>6} {'d_mlp':>6} {'n_ctx':>5}  notes")
    for name, s in PRESETS.items():
        print(f"{name:<11} {s['n_layers']:>2} {s['d_model']:>7} {s['n_heads']:>5} {s['d_head']:>6} {s['d_mlp']:>6} {s['n_ctx']:>5}  {PRESET_NOTES[name]}")
    return 0
