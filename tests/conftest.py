"""Shared fixtures: self-written stories, a trained tokenizer and a tiny trained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.support.stories import make_stories, write_txt

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Every test run uses its own cache folder (never the user's ~/.cache)."""
    os.environ["TINYINTERP_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(1)  # tiny models: one thread is fastest and leaves a core free
    yield


@pytest.fixture(scope="session")
def stories() -> list[str]:
    return make_stories(300, seed=0)


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory, stories) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    write_txt(d / "train.txt", stories[:260])
    write_txt(d / "eval.txt", stories[260:])
    return {"train": d / "train.txt", "eval": d / "eval.txt", "dir": d}


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, stories) -> Path:
    from tinyinterp.data.tokenizer import train_bpe

    return train_bpe(stories, tmp_path_factory.mktemp("tok") / "tok", vocab_size=384)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, corpus_files) -> Path:
    """A micro model trained for 60 steps through the public train() API."""
    from tinyinterp.training import TrainConfig, train

    out = tmp_path_factory.mktemp("ckpt") / "micro"
    cfg = TrainConfig(data=[str(corpus_files["train"])], eval_data=[str(corpus_files["eval"])], preset="micro",
                      vocab_size=384, max_steps=60, batch_size=8, eval_every=30, save_every=30, lr=3e-3,
                      warmup_steps=10, snapshots=3, sample_tokens=8)
    train(cfg, out)
    return out
