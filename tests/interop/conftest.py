"""Helpers for the interop tests: random GPT-Neo / GPT-2 Hugging Face folders with a tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TS_1L = REPO / "checkpoints" / "ts-1l"
TS_4L = REPO / "checkpoints" / "ts-4l"
TOKENIZER_VOCAB = 4096  # the bundled checkpoints' byte-level BPE


def add_tokenizer(folder: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TS_1L / name, folder / name)
    return folder


def neo_folder(folder: Path, seed: int = 0, tokenizer: bool = True, **overrides) -> tuple[Path, "torch.nn.Module"]:
    """A randomly initialised ``GPTNeoForCausalLM`` saved with ``save_pretrained`` (TinyStories-1M shape by default)."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    kw = dict(vocab_size=TOKENIZER_VOCAB, max_position_embeddings=2048, hidden_size=64, num_layers=8, num_heads=16,
              attention_types=[[["global", "local"], 4]], window_size=8, bos_token_id=0, eos_token_id=0)
    kw.update(overrides)
    torch.manual_seed(seed)
    model = GPTNeoForCausalLM(GPTNeoConfig(**kw)).eval()
    _randomise_norms(model)
    model.save_pretrained(folder)
    return (add_tokenizer(folder) if tokenizer else folder), model


def gpt2_folder(folder: Path, seed: int = 0, bin_weights: bool = False, **overrides):
    """A randomly initialised ``GPT2LMHeadModel`` (biases random too) saved as safetensors or ``pytorch_model.bin``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    kw = dict(vocab_size=TOKENIZER_VOCAB, n_positions=128, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    kw.update(overrides)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**kw)).eval()
    _randomise_norms(model)
    if bin_weights:
        folder.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder)
    return add_tokenizer(folder), model


@torch.no_grad()
def _randomise_norms(model) -> None:
    """Non-trivial LayerNorm gains and all biases, so a mapping mistake cannot hide behind 1s and 0s."""
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.normal_(0, 0.1)
        elif p.dim() == 1:
            p.uniform_(0.5, 1.5)


def tokens(vocab: int, batch: int = 3, length: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@pytest.fixture(scope="session")
def ts1l_hf(tmp_path_factory) -> Path:
    """The bundled one-layer checkpoint exported with ``tinyinterp export-hf`` (once per session)."""
    from tinyinterp.models.hf_export import export_hf

    out = tmp_path_factory.mktemp("export") / "ts-1l-hf"
    export_hf(TS_1L, out)
    return out
