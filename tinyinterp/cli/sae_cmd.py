"""``tinyinterp sae train | eval | features``: sparse autoencoders (SAELens) on a checkpoint's hook."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from tinyinterp.errors import ConfigError

# SAETrainConfig fields set by their own flags (positional CKPT / --data / --hook) or not exposed
_OWN = {"data", "hook"}


def _field_docs() -> dict[str, str]:
    """``{field: docstring}`` of SAETrainConfig, read from the docstring under each field."""
    from tinyinterp.sae import config as cfgmod

    tree = ast.parse(Path(cfgmod.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SAETrainConfig")
    docs, last = {}, None
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            last = node.target.id
        elif last and isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant):
            docs[last] = str(node.value.value).replace("``", "").replace("%", "%%")
            last = None
    return docs


def _flag_type(f: dataclasses.Field):
    t = str(f.type)
    return float if "float" in t else int if "int" in t else str


def add_parser(sub) -> None:
    from tinyinterp.sae.config import SAETrainConfig

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("sae", help="train, evaluate and inspect sparse autoencoders (SAELens)",
                       description="Sparse autoencoders on a checkpoint's activations, trained with SAELens and saved "
                                   "in its format (sae_lens.SAE.load_from_disk reads them).")
    ssub = p.add_subparsers(dest="sae_command", metavar="SUBCOMMAND", required=True)

    t = ssub.add_parser("train", formatter_class=fmt, help="train an SAE on one hook of a checkpoint",
                        description="Train an SAE with SAELens' runner on activations of CKPT at --hook over --data "
                                    "(never the evaluation stories). Rerunning with the same inputs is free; an "
                                    "interrupted run resumes from its last checkpoint. With --eval the quality figures "
                                    "go into the SAE's card.",
                        epilog="example: tinyinterp sae train checkpoints/ts-1l --hook blocks.0.mlp.hook_post "
                               "--data train.txt --eval val.txt --out runs/sae")
    t.add_argument("ckpt", metavar="CKPT", help="checkpoint folder")
    t.add_argument("--hook", default="blocks.0.mlp.hook_post", help="TransformerLens hook name")
    t.add_argument("--data", nargs="+", required=True, metavar="SRC", help="training stories: files, folders, globs, hf:NAME")
    t.add_argument("--out", required=True, help="SAE folder to write (SAELens format + README card)")
    t.add_argument("--eval", nargs="+", default=[], metavar="SRC", dest="eval_data",
                   help="evaluation stories for the quality figures in the card")
    t.add_argument("--eval-stories", type=int, default=None, help="use only the first N evaluation stories")
    docs = _field_docs()
    for f in dataclasses.fields(SAETrainConfig):
        if f.name in _OWN:
            continue
        t.add_argument("--" + f.name.replace("_", "-"), type=_flag_type(f), default=f.default, help=docs.get(f.name, ""))
    t.add_argument("--save-dtype", choices=["float32", "float16"], default="float32",
                   help="dtype of the saved weights (float16 halves the file; loads as float32)")
    t.add_argument("--refit-tokens", type=int, default=0,
                   help="after training: set the JumpReLU threshold to L0 = --target-l0 and refit the decoder by least "
                        "squares on this many training activations (0: off; docs/sae.md)")
    t.add_argument("--target-l0", type=float, default=None, help="L0 the threshold is calibrated to (default: --k)")
    t.add_argument("--force", action="store_true", help="retrain even if --out already holds this SAE")
    t.set_defaults(func=run_train)

    e = ssub.add_parser("eval", formatter_class=fmt, help="quality figures of an SAE on evaluation stories",
                        description="L0, fraction of variance explained, CE loss recovered (vs zero-ablation), "
                                    "dead and dense feature fractions of SAE_DIR spliced into CKPT, on --data.")
    _sae_and_model(e)
    e.add_argument("--data", nargs="+", required=True, metavar="SRC", help="evaluation stories")
    e.add_argument("--max-stories", type=int, default=None, help="use only the first N stories")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=run_eval)

    d = ssub.add_parser("features", formatter_class=fmt, help="dashboard data for SAE features as JSON",
                        description="Top activations on the given texts, activation histogram and logit effects "
                                    "(decoder direction @ W_U) of each feature, as JSON.")
    _sae_and_model(d)
    d.add_argument("--feature", type=int, nargs="+", required=True, help="feature ids")
    d.add_argument("--text", action="append", default=[], help="a text to search (repeat)")
    d.add_argument("--texts", nargs="+", default=[], metavar="SRC", help="story files to search (your own or model-written)")
    d.add_argument("--max-stories", type=int, default=200, help="stories read from --texts")
    d.add_argument("--examples", type=int, default=10, help="top activations per feature")
    d.add_argument("--ablation", action="store_true", help="also measure each feature's ablation effect on the texts' loss")
    d.set_defaults(func=run_features)


def _quality(model, sae, args) -> dict:
    from tinyinterp.sae.quality import evaluate_sae

    return evaluate_sae(model, sae, args.eval_data, max_stories=args.eval_stories).to_json()


def _sae_and_model(p) -> None:
    p.add_argument("sae", metavar="SAE_DIR", help="SAE folder (SAELens format)")
    p.add_argument("--model", required=True, metavar="CKPT", help="the checkpoint the SAE was trained on")


def run_train(args) -> int:
    import torch

    from tinyinterp.sae.config import SAETrainConfig
    from tinyinterp.sae.train import save_sae, train_sae

    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(SAETrainConfig) if f.name not in _OWN}
    cfg = SAETrainConfig(hook=args.hook, data=list(args.data), **fields)
    command = "tinyinterp " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["sae"] else None
    sae = train_sae(args.ckpt, cfg, out=args.out, force=args.force, command=command)
    meta = dict(sae.cfg.metadata.tinyinterp or {})
    model = None
    if args.eval_data or args.refit_tokens:
        from tinyinterp.checkpoint import load_model

        model = load_model(args.ckpt)
    if args.refit_tokens:
        from tinyinterp.sae.refit import refit_on_training_data

        if args.eval_data and "refit" not in meta:  # (a rerun finds the refitted SAE: keep the first measurement)
            meta["quality_before_refit"] = _quality(model, sae, args)
        meta["refit"] = refit_on_training_data(model, sae, cfg.data, args.refit_tokens, args.target_l0 or cfg.k)
        meta["refit"]["command"] = command
    if args.eval_data:
        meta["quality"] = _quality(model, sae, args)
        print(json.dumps({"out": args.out, **{k: v for k, v in meta["quality"].items() if k != "sources"}}))
    sae.cfg.metadata.tinyinterp = meta
    save_sae(sae, args.out, torch.float16 if args.save_dtype == "float16" else torch.float32)
    return 0


def _model_and_sae(args):
    from tinyinterp.checkpoint import load_model
    from tinyinterp.sae.load import load_sae

    model = load_model(args.model)
    return model, load_sae(args.sae, model=model)


def run_eval(args) -> int:
    from tinyinterp.sae.quality import evaluate_sae

    if args.max_stories is not None and args.max_stories <= 0:
        raise ConfigError(f"--max-stories={args.max_stories}: must be > 0")
    model, sae = _model_and_sae(args)
    q = evaluate_sae(model, sae, args.data, max_stories=args.max_stories)
    if args.json:
        print(json.dumps(q.to_json()))
    else:
        print(f"{args.sae}: L0 {q.l0:.1f}, FVE {q.fve:.3f}, CE loss recovered {q.ce_loss_recovered:.1%} "
              f"(clean {q.ce_loss_clean:.4f}, SAE {q.ce_loss_sae:.4f}, zero-ablated {q.ce_loss_zero_ablation:.4f}), "
              f"dead {q.dead_fraction:.1%}, dense {q.dense_fraction:.1%} on {q.tokens:,} tokens")
    return 0


def run_features(args) -> int:
    from tinyinterp.data.readers import load_stories
    from tinyinterp.sae.dashboard import feature_dashboards

    texts = list(args.text) + (load_stories(args.texts, max_stories=args.max_stories) if args.texts else [])
    if not texts:
        raise ConfigError("give --text TEXT (repeatable) or --texts FILE... to search for top activations")
    model, sae = _model_and_sae(args)
    boards = feature_dashboards(model, sae, texts, args.feature, n_examples=args.examples, ablation=args.ablation)
    print(json.dumps([b.to_json() for b in boards]))
    return 0
