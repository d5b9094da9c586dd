"""``tinyinterp export-hf``: write a model as a Hugging Face ``transformers`` folder."""

from __future__ import annotations

import argparse

from tinyinterp.output_folder import HELP


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export-hf", help="write a checkpoint as a Hugging Face transformers model (GPT-2 / GPT-Neo) + tokenizer",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Export CKPT to OUT so that transformers' AutoModelForCausalLM.from_pretrained(OUT) and "
                    "AutoTokenizer.from_pretrained(OUT) load it with the same logits. All-global models become "
                    "GPT-2 (GPT2LMHeadModel), models with local-attention layers GPT-Neo. The folder is written "
                    "beside OUT and renamed into place; the written model is loaded back and its logits compared. "
                    "See docs/interop.md.",
        epilog="example: tinyinterp export-hf checkpoints/ts-1l /tmp/ts-1l-hf")
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint folder, Hugging Face folder or hf:NAME")
    p.add_argument("out", metavar="OUT", help=f"folder to write. {HELP}")
    p.add_argument("--arch", choices=("auto", "gpt2", "gpt-neo"), default="auto",
                   help="architecture to write (auto: GPT-2 unless a layer uses local attention)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier `tinyinterp export-hf` output in OUT")
    p.add_argument("--no-check", action="store_true", help="do not load the result back to compare logits")
    p.add_argument("--no-verify", action="store_true", help="skip the checkpoint's sha256 check")
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyinterp.models.hf_export import export_hf

    res = export_hf(args.ckpt, args.out, overwrite=args.overwrite, arch=args.arch, check=not args.no_check,
                    verify=not args.no_verify)
    checked = f"; logits match to {res.max_abs_diff:.1e}" if res.max_abs_diff is not None else ""
    print(f"wrote {res.out} ({'GPT-2' if res.arch == 'gpt2' else 'GPT-Neo'}{checked})")
    return 0
