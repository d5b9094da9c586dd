"""The explorer in a real browser: `tinyinterp explore` on a free port, Debian's headless chromium.

Chromium is driven over the DevTools protocol (see ``tests/support/browser.py``): it loads a
page, polls the rendered text until the app has filled it in, and takes a screenshot.
"""

from __future__ import annotations

import json

import pytest

from tests.support.browser import Chromium, blank_fraction, find_chromium, serve

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None,
                       reason="chromium is not installed (.ci/run installs it: apt-get install -y chromium)"),
]


def test_pages_render_in_chromium(explorer_root, tmp_path):
    ckpt = explorer_root / "tiny-1l"
    first = json.loads((ckpt / "analysis" / "heads.json").read_text())[0]
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with serve(ckpt, root=explorer_root, env=env, log_path=tmp_path / "server.log") as url, Chromium() as browser:
        assert url.startswith("http://127.0.0.1:")
        browser.goto(url + "/heads")
        text = browser.wait_for(["Heads · tiny-1l", "L0H0 is", "Attention of head L0H0"], timeout=90)
        assert first["label"] in text.split("L0H0 is", 1)[1][:40]  # the head's label, as the page reads it
        assert "Heads" in text and "tiny-1l" in text and "Training dynamics" in text  # st.navigation labels
        assert any(lab in text for lab in ("local", "semantic", "sink", "mixed"))
        assert "Traceback" not in text
        shot = browser.screenshot(tmp_path / "heads.png")
        white, levels = blank_fraction(shot)
        assert white < 0.97 and levels > 20, (white, levels)

        browser.goto(url + "/heads?model=tiny-1l&head=L0H2")  # a shared link opens the same view
        text = browser.wait_for(["Heads · tiny-1l", "L0H2 is", "Attention of head L0H2"], timeout=90)
        assert "head=L0H2" in browser.eval("location.href")
        browser.goto(url + "/heads?head=L7H0")
        text = browser.wait_for(["The link asks for head L7H0", "L0H0 is"], timeout=90)
        assert "head=L0H0" in browser.eval("location.href") and "Traceback" not in text

        browser.goto(url + "/compare?a=tiny-1l&b=tiny-1l")
        text = browser.wait_for(["Compare", "Bits per byte", "Head labels per layer"], timeout=120)
        assert "Traceback" not in text

        browser.goto(url + "/")  # Overview (the default page)
        # wait for the metric itself: under load the card's text can arrive a poll before the metrics row
        text = browser.wait_for(["tiny-1l", "Model card", "Heads:", "Validation bits/byte"], timeout=90)
        assert "Traceback" not in text
        white, levels = blank_fraction(browser.screenshot(tmp_path / "overview.png"))
        assert white < 0.97 and levels > 20, (white, levels)


def test_heads_page_shows_output_effects_and_label_evidence(explorer_root, tmp_path):
    """Issue 12 in the browser: the output-effect panel (direct effect and ablation by next-token group, with
    story-bootstrap CIs), the label's evidence against its null, and the per-layer view."""
    ckpt = explorer_root / "tiny-1l"
    rows = json.loads((ckpt / "analysis" / "heads_axes.json").read_text())
    heads = json.loads((ckpt / "analysis" / "heads.json").read_text())
    ax = next(r for r in rows if (r["layer"], r["head"]) == (0, 1))
    assert heads[1]["label"] == ax["label"]  # one label: heads.json and the axes agree
    ci = lambda d: f"{d['estimate']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"  # noqa: E731
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with serve(ckpt, root=explorer_root, env=env, log_path=tmp_path / "server.log") as url, Chromium() as browser:
        browser.goto(url + "/heads?model=tiny-1l&head=L0H1")
        text = browser.wait_for([f"What L0H1 produces · label: {ax['label']}", "Evidence against the nulls",
                                 "Per predicted token, 95% story-bootstrap CI", "Per-layer view · layer 0"], timeout=120)
        assert ci(ax["effects"]["dla"]["FUNCTION"]) in text and ci(ax["effects"]["dla"]["CONTENT"]) in text
        pos = ax["positional"]
        assert f"position-only surrogate {pos['r2']:.2f} (null {pos['min_r2']:g})" in text  # the evidence vs its null
        assert f"JS real vs shuffled {ax['content']['js']:.3f} bits (null {ax['content']['min_js']:g})" in text
        assert "dla by next-token group, L0H1" in browser.html()  # the effect chart (plotly, with error bars)
        assert "Traceback" not in text
        browser.eval("[...document.querySelectorAll('label')].find(l => l.innerText.includes('mean-ablation')).click()")
        text = browser.wait_for(["nats of loss added"], timeout=60)
        assert ci(ax["effects"]["mean"]["FUNCTION"]) in text
        assert "mean by next-token group, L0H1" in browser.html()
        white, levels = blank_fraction(browser.screenshot(tmp_path / "heads_effects.png"))
        assert white < 0.97 and levels > 20, (white, levels)
