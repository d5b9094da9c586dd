"""`tinyinterp export-hf`: transformers loads the folder and gives the HookedTransformer's logits."""

from __future__ import annotations

import json

import pytest
import torch

import tinyinterp
from tests.interop.conftest import TOKENIZER_VOCAB, TS_1L, TS_4L, add_tokenizer, max_diff, tokens
from tinyinterp.checkpoint import save_checkpoint
from tinyinterp.models.hooked import hooked_config
from tinyinterp.cli.main import main
from tinyinterp.errors import CheckpointError, TinyInterpError
from tinyinterp.models.hf_export import export_hf, fold_unembed_bias

TOL = 1e-4
TEXT = "Once upon a time, a little dog named Pip found a shiny stone under a big tree."


def _hf(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_bundled_checkpoint_exports_as_gpt2(ts1l_hf):
    ours = tinyinterp.load_model(TS_1L)
    hf, tok = _hf(ts1l_hf)
    assert type(hf).__name__ == "GPT2LMHeadModel" and json.loads((ts1l_hf / "config.json").read_text())["scale_attn_weights"]
    ids = ours.to_tokens(TEXT)
    assert tok(TEXT)["input_ids"] == ids[0, 1:].tolist()  # same tokenizer (ours prepends BOS)
    toks = torch.cat([ids[:, :16], tokens(TOKENIZER_VOCAB, batch=1, length=16)])
    with torch.no_grad():
        ref = ours(toks)
        assert max_diff(hf(toks).logits, ref) <= TOL
        # round trip: the export loads back through the Hugging Face folder path
        back = tinyinterp.load_model(ts1l_hf)
        assert max_diff(back(toks), ref) <= TOL
        fast, _ = tinyinterp.load_fast_model(ts1l_hf)
        assert max_diff(fast(toks), ref) <= TOL
    greedy = hf.generate(ids[:, :5], max_new_tokens=12, do_sample=False)[0, 5:]
    assert tok.decode(greedy) == tinyinterp.generate_text(ours, tok.decode(ids[0, 1:5]), max_new_tokens=12)[len(tok.decode(ids[0, 1:5])):]


def test_four_layer_checkpoint_via_cli(tmp_path, capsys):
    out = tmp_path / "hf4"
    assert main(["export-hf", str(TS_4L), str(out)]) == 0
    assert "GPT-2" in capsys.readouterr().out
    hf, _ = _hf(out)
    toks = tokens(TOKENIZER_VOCAB, length=64)
    with torch.no_grad():
        assert max_diff(hf(toks).logits, tinyinterp.load_model(TS_4L)(toks)) <= TOL


def _random_ckpt(folder, seed: int, **fields):
    """A checkpoint with random weights, every bias and gain non-trivial (b_Q zero unless asked)."""
    from transformer_lens import HookedTransformer

    cfg = {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_head": 8, "d_mlp": 64, "n_ctx": 48, "d_vocab": TOKENIZER_VOCAB,
           "act_fn": "gelu_new", "normalization_type": "LN", "positional_embedding_type": "standard",
           "default_prepend_bos": True, "model_name": "random", **fields}
    torch.manual_seed(seed)
    model = HookedTransformer(hooked_config(cfg), move_to_device=False)
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in sd.items():
            if k.endswith(("b_K", "b_V", "b_O", "b_in", "b_out", "b_U", ".b")):
                v.normal_(0, 0.2)
            elif k.endswith(".w"):
                v.uniform_(0.5, 1.5)
    tok = folder.parent / f"tok-{seed}"  # a tokenizer-only folder (save_checkpoint copies all its JSON files)
    tok.mkdir()
    save_checkpoint(folder, cfg, sd, tokenizer_dir=add_tokenizer(tok))
    return tinyinterp.load_model(folder)


@pytest.mark.parametrize("scale", [True, False])
def test_local_attention_exports_as_gpt_neo(tmp_path, scale):
    ours = _random_ckpt(tmp_path / "c", 0, attn_types=["local", "global"], window_size=6, use_local_attn=True,
                        use_attn_scale=scale)
    res = export_hf(tmp_path / "c", tmp_path / "neo")
    assert res.arch == "gpt-neo" and res.max_abs_diff <= TOL
    hf, _ = _hf(tmp_path / "neo")
    assert type(hf).__name__ == "GPTNeoForCausalLM" and hf.config.attention_layers == ["local", "global"]
    toks = tokens(TOKENIZER_VOCAB, length=40)  # longer than the window
    with torch.no_grad():
        ref = ours(toks)
        assert max_diff(hf(toks).logits, ref) <= TOL
        assert max_diff(tinyinterp.load_model(tmp_path / "neo")(toks), ref) <= TOL  # round trip


def test_gpt2_without_attention_scale(tmp_path):
    ours = _random_ckpt(tmp_path / "c", 1, use_attn_scale=False)
    with torch.no_grad():
        for k, v in ours.state_dict().items():
            if k.endswith("b_Q"):
                v.normal_(0, 0.2)
    ours.cfg.model_name = "noscale"
    from tinyinterp.models.hf_export import build_hf_model

    hf = build_hf_model(ours, "gpt2")
    assert hf.config.scale_attn_weights is False
    toks = tokens(TOKENIZER_VOCAB, length=40)
    with torch.no_grad():
        assert max_diff(hf(toks).logits, ours(toks)) <= TOL


def test_what_gpt_neo_cannot_hold_is_refused(tmp_path):
    ours = _random_ckpt(tmp_path / "c", 2, attn_types=["local", "global"], window_size=6, use_local_attn=True)
    from tinyinterp.models.hf_export import build_hf_model, choose_arch

    with torch.no_grad():
        ours.blocks[0].attn.b_Q.fill_(0.1)
    with pytest.raises(CheckpointError, match=r"query biases \(b_Q\), which GPT-Neo lacks"):
        build_hf_model(ours, "gpt-neo")
    with pytest.raises(CheckpointError, match="local-attention layers, which GPT-2 lacks"):
        choose_arch(ours.cfg, "gpt2")


def test_refuses_to_overwrite(tmp_path, capsys, ts1l_hf):
    """A folder export-hf did not write is never touched, not even with --overwrite (issue 17);
    its own earlier output is replaced with --overwrite, and files the user added to it stay."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for flags in ([], ["--overwrite"]):
        assert main(["export-hf", str(TS_1L), str(out), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not empty and was not written by `tinyinterp export-hf`" in err[0]
        assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    with pytest.raises(TinyInterpError, match="holds the input"):
        export_hf(ts1l_hf, ts1l_hf, overwrite=True)
    mine = tmp_path / "mine"
    export_hf(TS_1L, mine, check=False)
    (mine / "notes.txt").write_text("added later")
    with pytest.raises(TinyInterpError, match="pass --overwrite"):
        export_hf(TS_1L, mine, check=False)
    res = export_hf(TS_1L, mine, overwrite=True, check=False)
    assert res.max_abs_diff is None and (mine / "notes.txt").read_text() == "added later"
    assert (mine / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left behind
    assert not [p for p in mine.iterdir() if p.name.startswith(".") and p.name != ".tinyinterp-output.json"]


@pytest.mark.parametrize("case", ["generic", "bias_orthogonal", "zero_gain"])
def test_unembedding_bias_fold_is_exact(case):
    g = torch.Generator().manual_seed(3)
    d, v = 16, 50
    w = torch.rand(d, generator=g) + 0.5
    b = torch.randn(d, generator=g) * 0.3
    W_U, b_U = torch.randn(d, v, generator=g) * 0.2, torch.randn(v, generator=g)
    if case == "bias_orthogonal":  # b . (1/w) = 0: the fold must move the bias
        b = b - (b @ (1 / w)) / (1 / w).square().sum() * (1 / w)
    if case == "zero_gain":
        w[3] = 0.0
    b2, W2 = fold_unembed_bias(w, b, W_U, b_U)
    x = torch.randn(8, d, generator=g, dtype=torch.float64)
    n = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)  # what LayerNorm feeds the unembedding
    ref = (w.double() * n + b.double()) @ W_U.double() + b_U.double()
    got = (w.double() * n + b2.double()) @ W2.double()
    assert max_diff(got, ref) <= 1e-5
