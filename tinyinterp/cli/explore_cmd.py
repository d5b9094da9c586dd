"""``tinyinterp explore``: open the Streamlit explorer (``apps/explorer/``) on a checkpoint.

The app lives in the repository (``apps/explorer/Home.py``), not in the installed package;
this command starts ``python -m streamlit run`` on it, bound to 127.0.0.1 unless ``--host``
says otherwise, and prints the URL. Streamlit always runs headless (a non-headless first run
asks for an email on stdin, and exits when there is none), so nothing here depends on a
terminal or on ``~/.streamlit``; the browser is opened from this side, with ``webbrowser``,
once the server answers (unless ``--no-browser``, or there is no graphical browser to open).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import webbrowser
from pathlib import Path

from tinyinterp.errors import TinyInterpError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "apps" / "explorer" / "Home.py"
DEFAULT_PORT = 8501
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # bound to every address: browse via loopback


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
    p.add_argument("--no-browser", action="store_true",
                   help="do not open a browser window (one is opened, once the server answers, only where a graphical "
                        "browser can run: a desktop session, or $BROWSER set)")
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


def command(host: str, port: int) -> list[str]:
    """The Streamlit server command: headless always (no first-run prompt), no file watcher, no usage stats."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--browser.serverAddress", host, "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer"]


def url_for(host: str, port: int) -> str:
    host = WILDCARD.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def can_open_browser() -> bool:
    """True where ``webbrowser`` would open a graphical browser rather than take over the terminal (lynx)."""
    if os.environ.get("BROWSER"):
        return True
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_when_ready(url: str, timeout: float = 120.0) -> threading.Thread:
    """Open ``url`` in the user's browser once the server answers its health check (in a daemon thread)."""

    def wait_then_open() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.25)
        else:
            return
        if not webbrowser.open(url):
            print(f"tinyinterp explorer: could not open a browser; open {url} yourself", flush=True)

    thread = threading.Thread(target=wait_then_open, name="open-browser", daemon=True)
    thread.start()
    return thread


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
    url = url_for(args.host, port)
    print(f"tinyinterp explorer: {url}  (Ctrl-C stops it)", flush=True)
    if not args.no_browser:
        if can_open_browser():
            open_when_ready(url)
        else:
            print("  (no graphical browser here: open that address in yours, or forward the port)", flush=True)
    return launch(command(args.host, port), env)


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
