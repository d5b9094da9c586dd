"""``tinyinterp`` command line. Every subcommand has complete ``--help``.

User mistakes print one line (``error: …``) and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback

from tinyinterp.cli import analyze_cmd, data_cmds, explore_cmd, model_cmds, train_cmd
from tinyinterp.cli import export_cmd, sae_cmd
from tinyinterp.errors import TinyInterpError

EXIT_USER_ERROR = 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``error: …``, exit 2) like every other user mistake."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tinyinterp",
        description="Train tiny TinyStories language models (TransformerLens-compatible) and read their heads and neurons.",
        epilog="Run `tinyinterp COMMAND --help` for the options of each command.",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    p.add_argument("-v", "--verbose", action="store_true", help="log more (DEBUG level)")
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train_cmd.add_parser(sub)
    model_cmds.add_parsers(sub)
    analyze_cmd.add_parser(sub)
    data_cmds.add_parsers(sub)
    explore_cmd.add_parser(sub)
    export_cmd.add_parser(sub)
    sae_cmd.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    for j, word in enumerate(argv):  # `tinyinterp [--debug] analyze merge ...` is the analyze-merge command
        if not word.startswith("-"):
            if word == "analyze" and argv[j + 1: j + 2] == ["merge"]:
                argv = [*argv[:j], analyze_cmd.MERGE, *argv[j + 2:]]
            break
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "datasets", "urllib3", "httpx", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    try:
        rc = args.func(args)
        return int(rc or 0)
    except TinyInterpError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except PermissionError as exc:  # an unreadable input or a read-only output, wherever it is met
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc.filename or 'a file'}: permission denied; make it readable/writable (chmod) or choose "
              "another path", file=sys.stderr)
        return EXIT_USER_ERROR
    except FloatingPointError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if args.debug:
            traceback.print_exc()
        msg = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: unexpected {type(exc).__name__}: {msg} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
