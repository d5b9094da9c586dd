"""``tinyinterp train``."""

from __future__ import annotations

import dataclasses
import errno
import json
import shlex
import sys
import typing
from pathlib import Path

from tinyinterp.errors import ConfigError
from tinyinterp.safe_files import read_json
from tinyinterp.models.presets import PRESETS

# fields whose flag is not --field-name, or that take a fixed set of values
_FLAG_NAMES = {"eval_data": "--eval", "model_overrides": "--model-config"}
_CHOICES = {"preset": lambda: list(PRESETS), "save_dtype": lambda: ["float32", "float16"]}
_METAVARS = {"data": "SRC", "eval_data": "SRC", "tokenizer": "DIR", "model_overrides": "JSON", "sample_prompts": "TEXT"}


def field_flags() -> list[tuple[str, dict]]:
    """``(flag, add_argument keywords)`` for every :class:`TrainConfig` field, from its type, default and help.

    Every flag's default is None (absent), so a ``--config`` file's value survives unless the flag is given."""
    from tinyinterp.training.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        text = _rst(f.metadata.get("help", ""))
        kw: dict = {"dest": f.name, "default": None}
        base = typing.get_origin(hints[f.name]) or hints[f.name]
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        if f.name == "model_overrides":
            kw.update(help=f"{text} (a JSON object)")
        elif hints[f.name] is bool:
            flag = "--no-" + f.name.replace("_", "-") if default else "--" + f.name.replace("_", "-")
            out.append((flag, {**kw, "action": "store_const", "const": not default,
                               "help": f"turn this off (on by default): {text}" if default else text}))
            continue
        elif base is list:
            kw.update(nargs="+", help=f"{text} (default: {' / '.join(default) or 'none'})")
        else:
            typ = args[0] if args and base is not str else base
            kw.update(type=typ, help=f"{text} (default: {default})")
            if f.name in _CHOICES:
                kw["choices"] = _CHOICES[f.name]()
        if f.name in _METAVARS:
            kw["metavar"] = _METAVARS[f.name]
        out.append((_FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-")), kw))
    return out


def _rst(text: str) -> str:
    """Help text without reStructuredText literals (``x`` -> x); argparse's % escaped."""
    return text.replace("``", "").replace("%", "%%")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model and write a HookedTransformer checkpoint",
        description="Train a TinyStories-style model: corpus → BPE tokenizer → token shards → training → checkpoint. "
                    "The output folder loads with tinyinterp.load_model(OUT) or plain TransformerLens. "
                    "Every TrainConfig field is a flag; flags override a --config file.",
        epilog="example: tinyinterp train --preset cpu-1l --data stories.txt --eval val.txt --out runs/1l --epochs 3",
    )
    p.add_argument("--out", required=False, metavar="OUT",
                   help="checkpoint folder to write: new, empty, or an earlier run (continue it with --resume or "
                        "replace it with --overwrite); a folder holding other files or an input is refused")
    p.add_argument("--config", default=None, metavar="JSON", help="TrainConfig as a JSON file; flags given on the command line override it")
    p.add_argument("--n-ctx", type=int, default=None, help="context length (a shortcut for --model-config '{\"n_ctx\": N}')")
    for flag, kw in field_flags():
        p.add_argument(flag, **kw)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved step")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (only the files a run writes; "
                                                            "files you added stay)")
    p.set_defaults(func=run)


def config_from_args(args) -> "TrainConfig":  # noqa: F821
    from tinyinterp.training.config import TrainConfig

    base: dict = {}
    if args.config:
        if not Path(args.config).is_file():
            raise ConfigError(f"{args.config}: cannot read training config (no such file); pass a JSON file to --config")
        try:
            base = read_json(args.config, ConfigError, "fix the training config file", max_bytes=1 << 20)
        except ConfigError as exc:
            raise ConfigError(f"{args.config}: cannot read training config ({_reason(exc)}); fix the file") from None
        if not isinstance(base, dict):
            raise ConfigError(f"{args.config}: expected a JSON object of TrainConfig fields")
    state_path = Path(args.out or ".") / "resume" / "state.json"
    if args.resume and not args.config and args.out and state_path.exists():
        try:
            base = read_json(state_path, ConfigError, "restart the run with --overwrite")["config"]
        except (ConfigError, KeyError, TypeError):
            raise ConfigError(f"{state_path}: unreadable resume state; restart the run with --overwrite") from None
        if not isinstance(base, dict):
            raise ConfigError(f"{state_path}: unreadable resume state; restart the run with --overwrite")
    given = {f: getattr(args, f) for f in (kw["dest"] for _, kw in field_flags())
             if getattr(args, f) is not None and f != "model_overrides"}
    overrides = base.get("model_overrides", {})
    if not isinstance(overrides, dict):
        raise ConfigError(f"{args.config}: model_overrides must be a JSON object of HookedTransformerConfig fields")
    overrides = dict(overrides)
    if args.model_overrides:
        try:
            given_overrides = json.loads(args.model_overrides)
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


def _reason(exc: Exception) -> str:
    """``invalid JSON (line 1: Expecting ...)`` of a ``path: reason; fix`` message."""
    text = str(exc).split(": ", 1)[-1]
    return text.rsplit("; ", 1)[0]


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
