"""``tinyinterp train``."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import shlex
import sys
from pathlib import Path

from tinyinterp.errors import ConfigError
from tinyinterp.models.presets import PRESETS

# CLI flag -> TrainConfig field (same name with dashes unless listed)
_FIELD_FLAGS = [
    ("batch_size", int), ("grad_accum", int), ("lr", float), ("min_lr_ratio", float), ("warmup_steps", int),
    ("max_steps", int), ("max_tokens", int), ("epochs", float), ("weight_decay", float), ("beta1", float),
    ("beta2", float), ("grad_clip", float), ("dropout", float), ("seed", int), ("eval_every", int),
    ("eval_tokens", int), ("log_every", int), ("save_every", int), ("snapshots", int), ("vocab_size", int),
    ("val_fraction", float), ("sample_tokens", int), ("threads", int),
]


def _field_help(name: str) -> str:
    from tinyinterp.training import config as cfgmod

    src = Path(cfgmod.__file__).read_text().splitlines()
    for i, line in enumerate(src):
        if line.strip().startswith(f"{name}:") and i + 1 < len(src) and src[i + 1].strip().startswith('"""'):
            return src[i + 1].strip().strip('"')
    return ""


def add_parser(sub) -> None:
    from tinyinterp.training.config import TrainConfig

    defaults = TrainConfig.__dataclass_fields__
    p = sub.add_parser(
        "train", help="train a model and write a HookedTransformer checkpoint",
        description="Train a TinyStories-style model: corpus → BPE tokenizer → token shards → training → checkpoint. "
                    "The output folder loads with tinyinterp.load_model(OUT) or plain TransformerLens.",
        epilog="example: tinyinterp train --preset cpu-1l --data stories.txt --eval val.txt --out runs/1l --epochs 3",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", nargs="+", default=None, metavar="SRC", help="training corpus: .txt/.jsonl/.json files, folders, globs, hf:NAME[:SPLIT]")
    p.add_argument("--eval", nargs="+", default=[], metavar="SRC", dest="eval_data", help="evaluation corpus, never trained on")
    p.add_argument("--out", required=False, help="checkpoint folder to write")
    p.add_argument("--preset", default=None, choices=list(PRESETS), help="model shape (see `tinyinterp presets`; default: cpu-1l)")
    p.add_argument("--config", default=None, metavar="JSON", help="TrainConfig as a JSON file; flags given on the command line override it")
    p.add_argument("--tokenizer", default=None, metavar="DIR", help="use this tokenizer folder instead of training a BPE")
    p.add_argument("--n-ctx", type=int, default=None, help="context length (overrides the preset)")
    p.add_argument("--model-config", default=None, metavar="JSON", help='HookedTransformerConfig overrides, e.g. \'{"use_attn_scale": false}\'')
    for name, typ in _FIELD_FLAGS:
        d = defaults[name].default
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, help=f"{_field_help(name)} (default: {d})")
    p.add_argument("--no-dedupe", action="store_true", help="keep exact duplicate stories")
    p.add_argument("--save-dtype", choices=["float32", "float16"], default=None, help="dtype of exported weights (default: float32)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved step")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --out")
    p.set_defaults(func=run)


def config_from_args(args) -> "TrainConfig":  # noqa: F821
    from tinyinterp.training.config import TrainConfig

    base: dict = {}
    if args.config:
        try:
            base = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{args.config}: cannot read training config ({exc})") from None
        if not isinstance(base, dict):
            raise ConfigError(f"{args.config}: expected a JSON object of TrainConfig fields")
    state_path = Path(args.out or ".") / "resume" / "state.json"
    if args.resume and not args.config and args.out and state_path.exists():
        try:
            base = json.loads(state_path.read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{state_path}: unreadable resume state; restart the run with --overwrite") from None
    given = {}
    if args.data is not None:
        given["data"] = args.data
    if args.eval_data:
        given["eval_data"] = args.eval_data
    for name, _ in _FIELD_FLAGS:
        v = getattr(args, name)
        if v is not None:
            given[name] = v
    for flag, field in (("preset", "preset"), ("tokenizer", "tokenizer"), ("save_dtype", "save_dtype"), ("device", "device")):
        if getattr(args, flag) is not None:
            given[field] = getattr(args, flag)
    if args.no_dedupe:
        given["dedupe"] = False
    if args.bf16:
        given["bf16"] = True
    if args.compile:
        given["compile"] = True
    overrides = base.get("model_overrides", {})
    if not isinstance(overrides, dict):
        raise ConfigError(f"{args.config}: model_overrides must be a JSON object of HookedTransformerConfig fields")
    overrides = dict(overrides)
    if args.model_config:
        try:
            given_overrides = json.loads(args.model_config)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--model-config: invalid JSON ({exc.msg})") from None
        if not isinstance(given_overrides, dict):
            raise ConfigError('--model-config: expected a JSON object, e.g. \'{"n_ctx": 128}\'')
        overrides.update(given_overrides)
    if args.n_ctx is not None:
        overrides["n_ctx"] = args.n_ctx
    if overrides:
        given["model_overrides"] = overrides
    merged = {**base, **given}
    budgets = [k for k in ("max_steps", "max_tokens", "epochs") if k in given]
    if budgets:  # a budget on the command line replaces the config file's
        for k in ("max_steps", "max_tokens", "epochs"):
            if k not in budgets:
                merged.pop(k, None)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(merged) - known)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; `tinyinterp train --help` lists the fields"
        raise ConfigError(f"{args.config or 'training config'}: unknown field(s) {unknown}{hint}")
    return TrainConfig(**merged)


def run(args) -> int:
    from tinyinterp.training import train

    if not args.out:
        raise ConfigError("--out is required: the checkpoint folder to write")
    cfg = config_from_args(args)
    command = "tinyinterp " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        out = train(cfg, args.out, overwrite=args.overwrite, resume=args.resume, command=command)
    except OSError as exc:  # a full disk outside a checkpoint save (those say so themselves)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ConfigError(f"{exc.filename or args.out}: {exc.strerror}; free disk space and run the command again") from exc
    print(f"checkpoint written to {out}")
    return 0
