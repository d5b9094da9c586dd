"""``tinyinterp explore``: open the Streamlit explorer (``apps/explorer/``) on a checkpoint.

The app lives in the repository (``apps/explorer/Home.py``), not in the installed package;
this command starts ``python -m streamlit run`` on it, bound to 127.0.0.1 unless ``--host``
says otherwise, and prints the URL.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tinyinterp.errors import TinyInterpError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "apps" / "explorer" / "Home.py"
DEFAULT_PORT = 8501
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "explore", help="open the interactive explorer (heads, neurons, playground) in the browser",
        description="Start the Streamlit explorer: overview, heads, neurons, playground and training dynamics of "
                    "a checkpoint. Every checkpoint under --checkpoints is in the model picker too. Uses the "
                    "precomputed CKPT/analysis/ folder when present, otherwise analyses the model on stories it "
                    "writes itself (cached). Stop it with Ctrl-C.",
        epilog="example: tinyinterp explore checkpoints/ts-1l --port 8502")
    p.add_argument("ckpt", metavar="CKPT", nargs="?",
                   help="checkpoint folder, Hugging Face folder or hf:NAME to open first (default: the picker's first)")
    p.add_argument("--port", type=int, default=None,
                   help=f"port (default: {DEFAULT_PORT}, or the next free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1); anything else exposes the explorer to your network")
    p.add_argument("--checkpoints", default=str(REPO / "checkpoints"), help="folder whose checkpoints the picker lists (default: the repository's checkpoints/)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    p.set_defaults(func=run)


def _free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(host: str, port: int | None) -> int:
    """``port`` if given and free (else an error); without one the first free port from 8501."""
    if port is not None:
        if not 1 <= port <= 65535:
            raise TinyInterpError(f"--port {port}: must be between 1 and 65535")
        if not _free(host, port):
            raise TinyInterpError(f"port {port} on {host} is in use; pick another with --port")
        return port
    for p in range(DEFAULT_PORT, DEFAULT_PORT + 100):
        if _free(host, p):
            return p
    raise TinyInterpError(f"no free port in {DEFAULT_PORT}-{DEFAULT_PORT + 99}; pass --port")


def command(host: str, port: int, browser: bool) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", host, "--server.port", str(port),
            "--server.headless", "false" if browser else "true", "--browser.gatherUsageStats", "false",
            "--browser.serverAddress", host, "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer"]


def run(args) -> int:
    if not APP.is_file():
        raise TinyInterpError(f"{APP}: the explorer app is missing; `tinyinterp explore` runs from a clone of the repository")
    env = dict(os.environ)
    if args.ckpt:
        from tinyinterp.models.hf_import import is_hub_name, snapshot_dir

        ckpt = snapshot_dir(args.ckpt) if is_hub_name(args.ckpt) else Path(args.ckpt).expanduser()
        if not ckpt.exists():
            raise TinyInterpError(f"{ckpt}: no such checkpoint folder; list bundled ones with `ls checkpoints/`")
        if not (ckpt / "config.json").is_file():
            raise TinyInterpError(f"{ckpt}: not a checkpoint folder (no config.json); see docs/checkpoint-format.md")
        env["TINYINTERP_EXPLORER_CKPT"] = str(ckpt.resolve())
    env["TINYINTERP_EXPLORER_ROOT"] = str(Path(args.checkpoints).expanduser().resolve())
    if args.host not in LOOPBACK:
        log.warning("binding %s: anyone who can reach this machine can use the explorer (and make it run models); "
                    "use the default 127.0.0.1 unless you mean it", args.host)
    port = pick_port(args.host, args.port)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"tinyinterp explorer: http://{shown}:{port}  (Ctrl-C stops it)", flush=True)
    return launch(command(args.host, port, not args.no_browser), env)


def launch(cmd: list[str], env: dict[str, str]) -> int:
    """Run the server until it exits; Ctrl-C and SIGTERM stop it too (no orphaned server)."""
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, _frame) -> None:
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to the server as well
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
