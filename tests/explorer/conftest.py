"""Fixtures for the explorer: a checkpoints folder with an analysed tiny model and an unanalysed copy.

``explorer_root/tiny-1l`` is the session's ``tiny_ckpt`` (micro model, 3 snapshots) with an
``analysis/`` folder written by ``tinyinterp.analyze`` on self-written stories (no probes,
for speed) and its ``corpus.txt``; ``explorer_root/tiny-raw`` is the same model without
analysis, which the explorer must analyse itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "apps" / "explorer" / "Home.py"


@pytest.fixture(scope="session")
def explorer_root(tmp_path_factory, tiny_ckpt, stories) -> Path:
    import tinyinterp
    from tinyinterp.analysis.neurons import NeuronConfig
    from tinyinterp.analysis.pipeline import AnalysisConfig
    from tinyinterp.atomic import write_text

    root = tmp_path_factory.mktemp("explorer") / "checkpoints"
    ignore = shutil.ignore_patterns("resume", "resume.old")
    shutil.copytree(tiny_ckpt, root / "tiny-1l", ignore=ignore)
    raw = root / "tiny-raw"
    raw.mkdir()
    for f in tiny_ckpt.iterdir():
        if f.is_file():
            shutil.copy2(f, raw / f.name)
    ckpt = root / "tiny-1l"
    model = tinyinterp.load_model(ckpt)
    texts = stories[:40]
    from apps.explorer.live import tag_stories

    corpus = tag_stories(model, texts)  # the explorer's own path: tinyinterp.corpus_from_texts
    cfg = AnalysisConfig(max_stories=None, run_probes=False, report=False, ablation_random=4,
                         neurons=NeuronConfig(control_max_stories=20))
    tinyinterp.analyze(model, corpus, ckpt / "analysis", cfg, model_name="tiny-1l", progress=False)
    write_text(ckpt / "analysis" / "corpus.txt", "".join(t + "\n<|endoftext|>\n" for t in texts))
    return root


@pytest.fixture
def explorer_env(explorer_root, monkeypatch) -> Path:
    """Point the explorer at ``explorer_root`` (no command-line checkpoint)."""
    monkeypatch.setenv("TINYINTERP_EXPLORER_ROOT", str(explorer_root))
    monkeypatch.delenv("TINYINTERP_EXPLORER_CKPT", raising=False)
    return explorer_root


@pytest.fixture
def app(explorer_env):
    """A fresh AppTest of the explorer, already run once (on the Overview page of tiny-1l)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at
