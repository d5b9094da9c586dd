"""The documented ways to start the explorer, run as a newcomer would: fresh ``HOME``, stdin closed, no TTY.

Streamlit's first non-headless run asks for an email on stdin (and exits with 255 when stdin
is closed); these tests fail if any documented command reaches that prompt. Each launches the
command exactly as documented (the README's line, ``make demo``), reads the URL it prints, and
has a real headless Chromium render the Heads page of the bundled model.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.browser import Chromium, find_chromium, start

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ("Email", "Welcome to Streamlit")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None,
                       reason="chromium is not installed (.ci/run installs it: apt-get install -y chromium)"),
]


def readme_command() -> list[str]:
    """The explorer command the README shows, with ``tinyinterp`` resolved to this environment's script."""
    lines = re.findall(r"^(tinyinterp explore [^\n#]*?)\s*(?:#.*)?$", (REPO / "README.md").read_text(), re.M)
    assert lines, "README.md shows no `tinyinterp explore …` command"
    words = lines[0].split()
    return [str(Path(sys.executable).with_name("tinyinterp")), *words[1:]]


def newcomer_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A fresh HOME (no ~/.streamlit), no display, and $BROWSER a script that records what it was asked to open."""
    home = tmp_path / "home"
    home.mkdir()
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "fake-browser"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), BROWSER=str(browser), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    return env, opened


def assert_heads_page(url: str, tmp_path: Path) -> str:
    with Chromium() as browser:
        browser.goto(url + "/heads")
        text = browser.wait_for(["Heads · ts-1l", "L0H0 is", "Attention of head L0H0"], timeout=120)
        assert "Traceback" not in text
        assert "model=ts-1l" in browser.eval("location.href") and "head=L0H0" in browser.eval("location.href")
    return text


def test_readme_command_comes_up_without_a_prompt(tmp_path):
    cmd = readme_command()
    assert cmd[1:] == ["explore", "checkpoints/ts-1l"]  # the command this test is about; update both together
    env, opened = newcomer_env(tmp_path)
    log = tmp_path / "explore.log"
    with start(cmd, env=env, cwd=REPO, timeout=120, log_path=log) as url:
        assert_heads_page(url, tmp_path)
        for _ in range(50):  # the browser is opened from our side, once the server answers
            if opened.is_file():
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert opened.read_text().split() == [url]
    out = log.read_text()
    assert not any(p in out for p in PROMPTS), out[-2000:]
    assert not (Path(env["HOME"]) / ".streamlit" / "credentials.toml").exists()


def test_make_demo_tours_then_serves_without_a_prompt(tmp_path):
    if subprocess.run(["make", "-q", "setup"], cwd=REPO, capture_output=True).returncode != 0:
        pytest.skip("the .venv is not the one `make setup` builds here (make demo would install packages)")
    env, _ = newcomer_env(tmp_path)
    log = tmp_path / "demo.log"
    with start(["make", "--no-print-directory", "demo"], env=env, cwd=REPO, timeout=600, log_path=log) as url:
        tour = log.read_text()
        for section in ("== attention heads", "== most selective neuron per part of speech", "L0H0: local"):
            assert section in tour, section
        assert_heads_page(url, tmp_path)
    assert not any(p in log.read_text() for p in PROMPTS)
