"""The fast training model and HookedTransformer compute the same logits (≤ 1e-4, fp32)."""

import pytest
import torch
from transformer_lens import HookedTransformer

from tinyinterp.checkpoint import load_model, save_checkpoint
from tinyinterp.models.hooked import hooked_config
from tinyinterp.models import TinyTransformer, from_hooked_state_dict, preset_config, to_hooked_state_dict

TOL = 1e-4


def _random_model(cfg, seed=0, scale=0.2):
    torch.manual_seed(seed)
    m = TinyTransformer(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, scale)
    return m.eval()


@pytest.mark.parametrize("overrides", [{}, {"use_attn_scale": False}, {"n_layers": 3, "act_fn": "gelu"},
                                       {"attn_types": ["global", "local"], "window_size": 8, "n_layers": 2, "use_local_attn": True}])
def test_random_weights_parity_through_checkpoint(tmp_path, tokenizer_dir, overrides):
    cfg = preset_config("micro", d_vocab=384, **overrides)
    fast = _random_model(cfg)
    buffers = HookedTransformer(hooked_config(cfg), move_to_device=False).state_dict()
    save_checkpoint(tmp_path / "c", cfg, to_hooked_state_dict(fast, buffers), tokenizer_dir)
    ht = load_model(tmp_path / "c")
    tokens = torch.randint(0, 384, (3, cfg["n_ctx"]))
    diff = (ht(tokens) - fast(tokens)).abs().max().item()
    assert diff <= TOL, diff
    back = from_hooked_state_dict(cfg, ht.state_dict())
    assert torch.equal(back(tokens), fast(tokens))


def test_trained_checkpoint_parity(tiny_ckpt):
    ht = load_model(tiny_ckpt)
    fast = from_hooked_state_dict(_cfg(tiny_ckpt), ht.state_dict())
    tokens = ht.to_tokens(["Once upon a time, there was a little cat.", "Tom had a red ball and a dog."], padding_side="right")
    assert (ht(tokens) - fast(tokens)).abs().max().item() <= TOL


def test_fp16_storage_restores_fp32_and_keeps_parity(tmp_path, tokenizer_dir):
    cfg = preset_config("micro", d_vocab=384)
    fast = _random_model(cfg, scale=0.1)
    save_checkpoint(tmp_path / "h", cfg, to_hooked_state_dict(fast), tokenizer_dir, dtype=torch.float16)
    ht = load_model(tmp_path / "h")
    assert ht.W_E.dtype == torch.float32
    fast16 = from_hooked_state_dict(cfg, ht.state_dict())
    tokens = torch.randint(0, 384, (2, 64))
    assert (ht(tokens) - fast16(tokens)).abs().max().item() <= TOL
    assert (ht(tokens) - fast(tokens)).abs().max().item() > 0  # fp16 rounding is real, parity is against the stored weights


def _cfg(path):
    import json

    return json.loads((path / "config.json").read_text())
