"""A Chromium test driver: run the explorer and look at it in headless Chromium (tests, benchmark, docs screenshots).

Chromium's one-shot ``--dump-dom`` / ``--screenshot`` modes stop before a Streamlit page has
rendered (the page fills in over a websocket, which ``--virtual-time-budget`` does not wait
for), so :class:`Chromium` drives Debian's ``chromium`` through the DevTools protocol instead
(``--remote-debugging-port``, using the ``websockets`` package Streamlit already depends on):
navigate, poll the rendered text until it holds what we wait for, then screenshot.

Every process started here runs in its own session and is killed by its process group id.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Sequence

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                  "--mute-audio")
BUSY_JS = "document.querySelector('[data-testid=\"stStatusWidget\"]') !== null"
# A skeleton stands where an element (a chart, a table) is drawn once its code has loaded: a screenshot taken
# before then shows grey boxes (a loaded machine takes seconds).
SKELETONS_JS = "document.querySelectorAll('[data-testid=\"stSkeleton\"]').length"


def find_chromium() -> str | None:
    """Debian's chromium (``/usr/bin/chromium``) or whatever ``chromium`` is on PATH."""
    for cand in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


URL_LINE = re.compile(r"tinyinterp explorer: (http://\S+)")


@contextlib.contextmanager
def start(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None,
          timeout: float = 90.0, log_path: Path | None = None) -> Iterator[str]:
    """Run ``cmd`` (which starts the explorer and prints ``tinyinterp explorer: URL``) with stdin closed;
    yield the URL once the server is healthy; always stop it and everything it started."""
    log_path = log_path or Path(tempfile.mkdtemp(prefix="tinyinterp-explore-")) / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        url = None
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"`{' '.join(map(str, cmd))}` exited with code {proc.returncode} before serving: "
                                   f"{log_path.read_text(errors='replace')[-1500:]}")
            found = URL_LINE.search(log_path.read_text(errors="replace"))
            url = url or (found.group(1) if found else None)
            if url:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the explorer did not answer within {timeout:.0f} s (log: {log_path})")
            time.sleep(0.2)
        yield url
    finally:
        _stop(proc)


def serve(ckpt: str | os.PathLike | None = None, root: str | os.PathLike | None = None, port: int | None = None,
          env: dict[str, str] | None = None, timeout: float = 90.0, log_path: Path | None = None):
    """Start ``tinyinterp explore`` on a free port (no browser); a context manager yielding its URL."""
    cmd = [sys.executable, "-m", "tinyinterp", "explore", "--port", str(port or free_port()), "--no-browser"]
    if ckpt is not None:
        cmd.append(str(ckpt))
    if root is not None:
        cmd += ["--checkpoints", str(root)]
    return start(cmd, env={**os.environ, **(env or {})}, timeout=timeout, log_path=log_path)


class Chromium:
    """A headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, binary: str | None = None, size: tuple[int, int] = (1400, 1000)) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise FileNotFoundError("chromium is not installed (Debian: apt-get install -y chromium)")
        self.size = size
        self._dir = tempfile.mkdtemp(prefix="tinyinterp-chromium-")
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self._dir}", "--remote-debugging-port=0",
             f"--window-size={size[0]},{size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._ids = itertools.count(1)
        try:
            self.ws = self._connect()
            self.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout: float = 30.0):
        from websockets.sync.client import connect

        port_file = Path(self._dir) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("chromium has no page to drive")
            time.sleep(0.05)
        return connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        return self.eval("document.body ? document.body.innerText : ''") or ""

    def html(self) -> str:
        return self.eval("document.documentElement.outerHTML") or ""

    def wait_for(self, needles: Sequence[str], timeout: float = 60.0, settle: float = 1.0) -> str:
        """Poll the rendered text until it holds every needle and Streamlit has stopped running."""
        deadline = time.monotonic() + timeout
        text, stable_since = "", None
        while time.monotonic() < deadline:
            text = self.text()
            ready = all(n in text for n in needles) and not self.eval(BUSY_JS)
            if ready:
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since >= settle:
                    return text
            else:
                stable_since = None
            time.sleep(0.2)
        missing = [n for n in needles if n not in text]
        raise TimeoutError(f"page never showed {missing} (last text: {text[:300]!r})")

    def wait_drawn(self, timeout: float = 60.0) -> int:
        """Wait (at most ``timeout``) until no skeleton is left on the page; returns how many are left."""
        deadline = time.monotonic() + timeout
        while (left := int(self.eval(SKELETONS_JS) or 0)) and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(0.5 if not left else 0)  # the last element's paint
        return left

    def screenshot(self, path: str | os.PathLike, full_height: int | None = None) -> Path:
        """PNG of the page; ``full_height`` > viewport grows the viewport first (capped there)."""
        w, h = self.size
        if full_height:
            scroll = self.eval("Math.max(...[...document.querySelectorAll('section, div')].map(e => e.scrollHeight))") or h
            self.call("Emulation.setDeviceMetricsOverride", width=w, height=int(min(max(h, scroll), full_height)),
                      deviceScaleFactor=1, mobile=False)
            time.sleep(1.0)
        self.wait_drawn()
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        if full_height:
            self.call("Emulation.setDeviceMetricsOverride", width=w, height=h, deviceScaleFactor=1, mobile=False)
        path = Path(path)
        path.write_bytes(data)
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        _stop(self.proc, grace=3.0)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def blank_fraction(png: bytes | str | os.PathLike) -> tuple[float, int]:
    """(share of near-white pixels, number of distinct grey levels) of a screenshot."""
    from PIL import Image

    raw = png if isinstance(png, bytes) else Path(png).read_bytes()
    img = Image.open(io.BytesIO(raw)).convert("L")
    hist = img.histogram()
    total = sum(hist)
    return sum(hist[245:]) / total, sum(1 for v in hist if v)


def shrink_png(path: str | os.PathLike, max_bytes: int = 300_000) -> Path:
    """Keep a screenshot under ``max_bytes``: re-encode with a 256-colour palette, then scale down if needed."""
    from PIL import Image

    path = Path(path)
    if path.stat().st_size <= max_bytes:
        return path
    img = Image.open(path).convert("RGB")
    for scale in (1.0, 0.85, 0.7, 0.6, 0.5):
        im = img if scale == 1.0 else img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
        buf = io.BytesIO()
        im.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG", optimize=True)
        if buf.tell() <= max_bytes or scale == 0.5:
            path.write_bytes(buf.getvalue())
            break
    return path
