"""Hugging Face GPT-Neo / GPT-2 folders load as HookedTransformers with the same logits."""

from __future__ import annotations

import json
import os

import pytest
import torch

import tinyinterp
from tests.interop.conftest import TOKENIZER_VOCAB, add_tokenizer, gpt2_folder, max_diff, neo_folder, tokens
from tinyinterp.cli.main import main
from tinyinterp.errors import CheckpointError

TOL = 1e-4


def test_gpt_neo_tinystories_1m_shape_with_local_windows(tmp_path):
    """8 layers alternating global/local, window 8: sequences of 40 tokens cross the window."""
    folder, hf = neo_folder(tmp_path / "neo")
    model = tinyinterp.load_model(folder)
    cfg = model.cfg
    assert cfg.attn_types == ["global", "local"] * 4 and cfg.window_size == 8 and not cfg.use_attn_scale
    assert cfg.n_ctx == 2048 and cfg.d_vocab == TOKENIZER_VOCAB and not model.training
    toks = tokens(TOKENIZER_VOCAB, length=40)
    with torch.no_grad():
        ref = hf(toks).logits
        assert max_diff(model(toks), ref) <= TOL
        fast, tok = tinyinterp.load_fast_model(folder)  # the fast model honours the windows too
        assert max_diff(fast(toks), ref) <= TOL
    assert model.to_str_tokens("Once upon a time")[0] == "<|endoftext|>"
    # the windows matter on this batch: the same weights with every layer global give other logits
    from transformer_lens import HookedTransformer

    glob = HookedTransformer(cfg.__class__(**{**cfg.to_dict(), "attn_types": None, "use_local_attn": False}))
    glob.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith(("attn.mask", "attn.IGNORE"))},
                         strict=False)
    with torch.no_grad():
        assert max_diff(glob(toks), ref) > 1e-3


def test_gpt_neo_one_layer_local(tmp_path):
    folder, hf = neo_folder(tmp_path / "neo1", num_layers=1, attention_types=[[["local"], 1]], window_size=4,
                            hidden_size=32, num_heads=4)
    model = tinyinterp.load_model(folder)
    toks = tokens(TOKENIZER_VOCAB, length=24)
    with torch.no_grad():
        assert max_diff(model(toks), hf(toks).logits) <= TOL


def test_gpt_neo_real_tinystories_1m_config(tmp_path):
    """The released TinyStories-1M configuration itself: vocabulary 50257, 2048 positions, window 256."""
    folder, hf = neo_folder(tmp_path / "TinyStories-1M", vocab_size=50257, window_size=256, bos_token_id=50256,
                            eos_token_id=50256)
    model = tinyinterp.load_model(folder)
    # the official models were trained on 512 tokens: a TinyStories folder gets n_ctx 512, as TransformerLens does
    assert model.cfg.n_ctx == 512 and model.cfg.d_vocab == 50257 and model.cfg.window_size == 256
    toks = tokens(50257, batch=2, length=300)  # longer than the 256-token window
    with torch.no_grad():
        assert max_diff(model(toks), hf(toks).logits) <= TOL


@pytest.mark.parametrize("scale", [True, False])
def test_gpt2_folder(tmp_path, scale):
    folder, hf = gpt2_folder(tmp_path / "g", scale_attn_weights=scale)
    model = tinyinterp.load_model(folder)
    assert model.cfg.use_attn_scale is scale and model.cfg.n_ctx == 128
    toks = tokens(TOKENIZER_VOCAB)
    with torch.no_grad():
        assert max_diff(model(toks), hf(toks).logits) <= TOL


def test_pytorch_bin_weights_and_sharded_safetensors(tmp_path):
    folder, hf = gpt2_folder(tmp_path / "bin", bin_weights=True)
    toks = tokens(TOKENIZER_VOCAB)
    with torch.no_grad():
        ref = hf(toks).logits
        assert max_diff(tinyinterp.load_model(folder)(toks), ref) <= TOL
        sharded = tmp_path / "sharded"
        hf.save_pretrained(sharded, max_shard_size="200KB")
        assert (sharded / "model.safetensors.index.json").is_file()
        assert max_diff(tinyinterp.load_model(add_tokenizer(sharded))(toks), ref) <= TOL


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_pickle_payload_in_bin_is_never_executed(tmp_path):
    folder, _ = gpt2_folder(tmp_path / "evil", bin_weights=True)
    marker = str(tmp_path / "pwned")
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({**sd, "evil": _Evil(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: unreadable weights"):
        tinyinterp.load_model(folder)
    assert not os.path.exists(marker)


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(CheckpointError, match=r"config\.json: model_type 'llama' is not supported") as e:
        tinyinterp.load_model(tmp_path)
    assert "\n" not in str(e.value)


def test_missing_tokenizer(tmp_path):
    folder, _ = neo_folder(tmp_path / "notok", tokenizer=False, num_layers=1, attention_types=[[["global"], 1]])
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        tinyinterp.load_model(folder)
    assert tinyinterp.load_model(folder, with_tokenizer=False).tokenizer is None


def test_tokenizer_larger_than_vocabulary(tmp_path):
    folder, _ = gpt2_folder(tmp_path / "small", vocab_size=300)
    with pytest.raises(CheckpointError, match="tokenizer has 4096 ids but config.json says vocab_size=300"):
        tinyinterp.load_model(folder)


def test_weights_from_another_model(tmp_path):
    folder, _ = gpt2_folder(tmp_path / "a")
    other, _ = gpt2_folder(tmp_path / "b", n_embd=32)
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="weights do not match config.json"):
        tinyinterp.load_model(folder)


def test_hub_name_offline_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"hf:roneneldan/TinyStories-33M: .*offline.*pass that folder"):
        tinyinterp.load_model("hf:roneneldan/TinyStories-33M")
    assert main(["info", "hf:roneneldan/TinyStories-33M"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: hf:roneneldan/TinyStories-33M") and "download" in err[0]


def test_hub_name_online_goes_through_transformerlens(tmp_path, monkeypatch, capsys):
    """No network here: TransformerLens' loader is replaced by one that prints like it and returns a local model."""
    from transformer_lens import HookedTransformer

    folder, hf = neo_folder(tmp_path / "neo", num_layers=2, attention_types=[[["global", "local"], 1]])
    calls = []

    def fake(name, **kwargs):
        calls.append((name, kwargs))
        if name != "roneneldan/TinyStories-1M":
            raise ValueError(f"{name} not found. Valid official model names (excl aliases): ...")
        print(f"Loaded pretrained model {name} into HookedTransformer")
        return tinyinterp.load_model(folder)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(HookedTransformer, "from_pretrained_no_processing", staticmethod(fake))
    model = tinyinterp.load_model("hf:roneneldan/TinyStories-1M")
    assert calls[0][0] == "roneneldan/TinyStories-1M" and capsys.readouterr().out == ""  # TL's print is logged
    fast, _ = tinyinterp.load_fast_model("hf:roneneldan/TinyStories-1M")
    toks = tokens(TOKENIZER_VOCAB, length=20)
    with torch.no_grad():
        assert max_diff(model(toks), hf(toks).logits) <= TOL and max_diff(fast(toks), hf(toks).logits) <= TOL
    with pytest.raises(CheckpointError, match=r"hf:someone/else: TransformerLens cannot load it \(ValueError") as e:
        tinyinterp.load_model("hf:someone/else")
    assert "\n" not in str(e.value)
