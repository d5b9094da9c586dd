"""``tinyinterp tokenizer`` and ``tinyinterp prepare``: the data steps of training, on their own."""

from __future__ import annotations

import argparse
import json

from tinyinterp.output_folder import HELP


def add_parsers(sub) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer", formatter_class=fmt,
                       description="Train a byte-level BPE (<|endoftext|> = BOS/EOS/PAD) and save it as a folder that "
                                   "PreTrainedTokenizerFast.from_pretrained and HookedTransformer accept.")
    p.add_argument("--data", nargs="+", required=True, metavar="SRC", help="training corpus")
    p.add_argument("--out", required=True, metavar="OUT", help=f"tokenizer folder to write. {HELP}")
    p.add_argument("--vocab-size", type=int, default=4096, help="number of ids")
    p.add_argument("--no-dedupe", action="store_true", help="keep exact duplicate stories")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier `tinyinterp tokenizer` output in OUT")
    p.set_defaults(func=run_tokenizer)

    p = sub.add_parser("prepare", help="pre-tokenise a corpus into uint16 shards", formatter_class=fmt,
                       description="Tokenise stories into uint16 memory-mapped shards with meta.json "
                                   "(sources with sha256, tokenizer hash, token and byte counts). "
                                   "Re-running with the same inputs does nothing.")
    p.add_argument("--data", nargs="+", required=True, metavar="SRC", help="training corpus")
    p.add_argument("--eval", nargs="+", default=None, metavar="SRC", help="evaluation corpus (never enters train)")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer folder")
    p.add_argument("--out", default=None, metavar="OUT",
                   help=f"output folder (default: the cache, keyed by the inputs' fingerprint). {HELP}")
    p.add_argument("--val-fraction", type=float, default=0.01, help="stories held out by hash when --eval is not given")
    p.add_argument("--no-dedupe", action="store_true", help="keep exact duplicate stories")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier `tinyinterp prepare` output in OUT "
                                                            "made from other inputs")
    p.set_defaults(func=run_prepare)


def run_tokenizer(args) -> int:
    from tinyinterp.data.readers import iter_stories, resolve_sources
    from tinyinterp.data.tokenizer import describe, train_bpe

    srcs = resolve_sources(args.data)
    train_bpe(iter_stories(srcs, dedupe=not args.no_dedupe), args.out, vocab_size=args.vocab_size,
              corpus_name=", ".join(s.path for s in srcs), overwrite=args.overwrite,
              inputs=[*args.data, *(s.path for s in srcs if s.kind != "hf")])
    print(json.dumps(describe(args.out)))
    return 0


def run_prepare(args) -> int:
    from tinyinterp.data.token_shards import PreparedData, prepare_data

    out = prepare_data(args.data, args.tokenizer, args.out, eval_sources=args.eval,
                       val_fraction=args.val_fraction, dedupe=not args.no_dedupe, overwrite=args.overwrite)
    meta = PreparedData.open(out).meta
    print(json.dumps({"path": str(out), "splits": meta["splits"]}))
    return 0
