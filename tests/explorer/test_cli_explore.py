"""`tinyinterp explore`: arguments, loopback by default, a warning for other hosts, the URL printed."""

from __future__ import annotations

import logging
import socket

import pytest

from tinyinterp.cli import explore_cmd
from tinyinterp.cli.main import main


@pytest.fixture
def launched(monkeypatch):
    calls = []

    def fake_launch(cmd, env):
        calls.append((cmd, env))
        return 0

    monkeypatch.setattr(explore_cmd, "launch", fake_launch)
    return calls


def _opt(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_defaults_bind_loopback_and_print_url(launched, explorer_root, capsys):
    ckpt = explorer_root / "tiny-1l"
    assert main(["explore", str(ckpt), "--checkpoints", str(explorer_root), "--no-browser"]) == 0
    cmd, env = launched[0]
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("apps/explorer/Home.py")
    assert _opt(cmd, "--server.address") == "127.0.0.1" and _opt(cmd, "--server.headless") == "true"
    port = int(_opt(cmd, "--server.port"))
    assert f"http://127.0.0.1:{port}" in capsys.readouterr().out
    assert env["TINYINTERP_EXPLORER_CKPT"] == str(ckpt.resolve())
    assert env["TINYINTERP_EXPLORER_ROOT"] == str(explorer_root.resolve())


def test_other_host_warns(launched, caplog, capsys):
    with caplog.at_level(logging.WARNING):
        assert main(["explore", "--host", "0.0.0.0", "--port", str(_free_port()), "--no-browser"]) == 0
    assert _opt(launched[0][0], "--server.address") == "0.0.0.0"
    assert any("anyone who can reach this machine" in r.getMessage() for r in caplog.records)
    assert "http://127.0.0.1:" in capsys.readouterr().out  # bound everywhere; this machine's browser uses loopback


@pytest.mark.parametrize("env,opens", [({"BROWSER": "firefox"}, True), ({"DISPLAY": ":0"}, True), ({}, False)])
def test_always_headless_and_the_browser_is_ours(launched, monkeypatch, capsys, env, opens):
    """Streamlit never runs non-headless (its first run would ask for an email on stdin); we open the browser,
    only where a graphical one can run (a console browser would take over the terminal)."""
    for k in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(explore_cmd.sys, "platform", "linux")
    opened = []
    monkeypatch.setattr(explore_cmd, "open_when_ready", opened.append)
    assert main(["explore", "--port", str(_free_port())]) == 0
    assert _opt(launched[-1][0], "--server.headless") == "true"
    out = capsys.readouterr().out
    assert bool(opened) == opens and (opened[0].startswith("http://127.0.0.1:") if opens else "open that address" in out)
    assert main(["explore", "--port", str(_free_port()), "--no-browser"]) == 0
    assert len(opened) == int(opens) and _opt(launched[-1][0], "--server.headless") == "true"


def test_open_when_ready_waits_for_the_server(monkeypatch):
    import http.server
    import threading

    opened = []
    monkeypatch.setattr(explore_cmd.webbrowser, "open", lambda url: opened.append(url) or True)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200 if self.path == "/_stcore/health" else 404)
            self.end_headers()

        def log_message(self, *a):
            pass

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    thread = explore_cmd.open_when_ready(url, timeout=20)
    thread.join(0.6)
    assert not opened  # nothing answers yet
    server = http.server.HTTPServer(("127.0.0.1", port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        thread.join(20)
    finally:
        server.shutdown()
    assert opened == [url]


def test_bad_checkpoint_and_busy_port(launched, tmp_path, capsys):
    assert main(["explore", str(tmp_path / "nope")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err
    assert main(["explore", str(tmp_path)]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert main(["explore", "--port", str(busy)]) == 2
    assert "in use" in capsys.readouterr().err
    assert main(["explore", "--port", "70000"]) == 2
    assert not launched


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]
