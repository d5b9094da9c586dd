"""The bundled SAE: loads with SAELens directly, fits ts-1l, reconstructs self-written stories well, fits the size budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SAE_DIR = REPO / "checkpoints" / "ts-1l" / "sae" / "blocks.0.mlp.hook_post"
pytestmark = [pytest.mark.golden, pytest.mark.skipif(not SAE_DIR.exists(), reason="no bundled SAE")]


def test_bundled_sae_loads_and_fits_ts1l(corpus_files):
    from sae_lens import SAE

    import tinyinterp
    from tinyinterp.sae.quality import evaluate_sae

    torch.set_num_threads(1)
    direct = SAE.load_from_disk(str(SAE_DIR))
    assert direct.W_dec.dtype == torch.float32 and direct.cfg.d_in == 1024
    model = tinyinterp.load_model(REPO / "checkpoints" / "ts-1l")
    sae = tinyinterp.load_sae(SAE_DIR, model=model)
    meta = json.loads((SAE_DIR / "cfg.json").read_text())["metadata"]
    assert meta["hook_name"] == "blocks.0.mlp.hook_post" and meta["model_name"] == model.cfg.model_name
    ours = meta["tinyinterp"]
    eval_files = {Path(s["path"]).name for s in ours["quality"]["sources"]}
    train_files = {Path(s["path"]).name for s in ours["data"]["sources"]}
    assert not eval_files & train_files  # never trained on the evaluation stories
    # self-written template stories (tests/fixtures): far from TinyStories, so only a sanity floor
    q = evaluate_sae(model, sae, corpus_files["eval"], progress=False)
    assert q.l0 < 64 and q.fve > 0.5 and q.ce_loss_recovered > 0.8
    with pytest.raises(tinyinterp.CheckpointError, match="trained on model"):
        tinyinterp.load_sae(SAE_DIR, model=tinyinterp.load_model(REPO / "checkpoints" / "ts-4l"))


def test_bundled_saes_fit_the_size_budget():
    total = sum(p.stat().st_size for p in (REPO / "checkpoints").glob("*/sae/**/*") if p.is_file())
    assert total <= 15_000_000
