"""The Features page: a checkpoint with an SAE and a feature table renders in the app and in a real browser."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.analysis.test_features_cli import HOOK, _sae
from tests.support.browser import Chromium, blank_fraction, find_chromium, serve

APP = Path(__file__).resolve().parents[2] / "apps" / "explorer" / "Home.py"


@pytest.fixture(scope="module")
def features_root(explorer_root, tmp_path_factory) -> Path:
    """``tiny-1l`` of the explorer fixtures plus ``sae/blocks.0.mlp.hook_post`` and the feature table of its analysis."""
    import tinyinterp
    from apps.explorer.live import tag_stories

    root = tmp_path_factory.mktemp("features") / "checkpoints"
    ckpt = root / "tiny-1l"
    shutil.copytree(explorer_root / "tiny-1l", ckpt)
    model = tinyinterp.load_model(ckpt)
    sae_dir = _sae(ckpt / "sae" / HOOK, model.cfg.d_mlp, model.cfg.model_name)
    texts = tinyinterp.load_stories(str(ckpt / "analysis" / "corpus.txt"))
    cfg = tinyinterp.FeatureConfig(identity=tinyinterp.IdentityConfig(n_boot=100, n_boot_types=50), ablation=None,
                                   name=HOOK)
    tinyinterp.find_pos_features(model, tag_stories(model, texts), str(sae_dir), cfg).save(ckpt / "analysis")
    return root


def test_features_page_in_the_app(features_root, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TINYINTERP_EXPLORER_ROOT", str(features_root))
    monkeypatch.delenv("TINYINTERP_EXPLORER_CKPT", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("views/features.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value.startswith("Features · tiny-1l")
    board = at.session_state["features:board"]
    assert board["hist_counts"] and len(board["promoted"]) == 10 and isinstance(board["ablation_loss_delta"], float)
    at.number_input[0].set_value(3).run()
    assert not at.exception and at.session_state["features:board"]["feature"] == 3
    at.text_input(key="features:query").set_value("NOUN").run()
    assert not at.exception


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (.ci/run installs it: apt-get install -y chromium)")
def test_features_page_renders_in_chromium(features_root, tmp_path):
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with serve(features_root / "tiny-1l", root=features_root, env=env, log_path=tmp_path / "server.log") as url, \
            Chromium() as browser:
        browser.goto(url + "/features?model=tiny-1l&feature=L0F5")
        text = browser.wait_for(["Features · tiny-1l", "Best neuron vs best feature", "Feature L0F5", "promoted"],
                                timeout=120)
        assert "Traceback" not in text and "Neurons" in text  # beside Neurons in the navigation
        assert "feature=L0F5" in browser.eval("location.href")
        white, levels = blank_fraction(browser.screenshot(tmp_path / "features.png"))
        assert white < 0.97 and levels > 20, (white, levels)


def test_features_page_without_an_sae_says_how_to_train_one(app):
    app.switch_page("views/features.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert "has no sparse autoencoder" in app.info[0].value and "tinyinterp sae train" in app.info[0].value
