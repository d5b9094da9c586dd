import json

import numpy as np
import pytest

from tinyinterp.data.batches import WindowSampler, eval_windows
from tinyinterp.data.token_shards import PreparedData, prepare_data
from tinyinterp.data.tokenizer import load_tokenizer, token_byte_lengths, tokenizer_sha256


def test_tokenizer_loads_everywhere(tokenizer_dir, stories):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    assert len(tok) == 384
    assert tok.bos_token == tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 0
    ids = tok(stories[0], add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == stories[0]
    cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_ctx=16, d_head=4, n_heads=2, d_vocab=len(tok), attn_only=True)
    model = HookedTransformer(cfg, tokenizer=load_tokenizer(tokenizer_dir))
    assert model.to_str_tokens("Once upon a time")[:2] == ["<|endoftext|>", "Once"]


def test_byte_lengths_sum_to_text_bytes(tokenizer_dir, stories):
    tok = load_tokenizer(tokenizer_dir)
    table = token_byte_lengths(tok)
    assert table[0] == 0  # special token
    for s in stories[:20] + ["Café – “quoted” ☃ text"]:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        assert table[ids].sum() == len(s.encode("utf-8"))


def test_prepare_is_deterministic_and_noop(tmp_path, tokenizer_dir, corpus_files):
    out = prepare_data(str(corpus_files["train"]), tokenizer_dir, tmp_path / "d", eval_sources=str(corpus_files["eval"]))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"]["val"]["stories"] == 40 and meta["splits"]["train"]["stories"] > 100
    assert meta["tokenizer"]["sha256"] == tokenizer_sha256(tokenizer_dir)
    assert meta["sources"]["train"][0]["sha256"] and meta["sources"]["eval"][0]["sha256"]
    mtime = (out / "train-00000.bin").stat().st_mtime_ns
    prepare_data(str(corpus_files["train"]), tokenizer_dir, tmp_path / "d", eval_sources=str(corpus_files["eval"]))
    assert (out / "train-00000.bin").stat().st_mtime_ns == mtime  # no-op rerun
    data = PreparedData.open(out)
    train = data.tokens("train")[0]
    assert train.dtype == np.uint16 and train[0] == 0
    assert (train == 0).sum() == meta["splits"]["train"]["stories"]  # one BOS per story


def test_eval_files_never_enter_training(tmp_path, tokenizer_dir, corpus_files, stories):
    from tests.support.stories import write_txt

    both = tmp_path / "both.txt"
    write_txt(both, stories[:50])
    out = prepare_data([str(both), str(corpus_files["eval"])], tokenizer_dir, tmp_path / "d", eval_sources=str(corpus_files["eval"]))
    meta = json.loads((out / "meta.json").read_text())
    assert [s["path"] for s in meta["sources"]["train"]] == [str(both)]
    tok = load_tokenizer(tokenizer_dir)
    train_text = tok.decode(PreparedData.open(out).tokens("train")[0].tolist())
    assert stories[-1] not in train_text


def test_hash_split_is_order_independent(tmp_path, tokenizer_dir, stories):
    from tests.support.stories import write_txt

    write_txt(tmp_path / "a.txt", stories)
    write_txt(tmp_path / "b.txt", stories[::-1])
    ma = json.loads((prepare_data(str(tmp_path / "a.txt"), tokenizer_dir, tmp_path / "da", val_fraction=0.2) / "meta.json").read_text())
    mb = json.loads((prepare_data(str(tmp_path / "b.txt"), tokenizer_dir, tmp_path / "db", val_fraction=0.2) / "meta.json").read_text())
    assert ma["splits"]["val"]["stories"] == mb["splits"]["val"]["stories"] > 0
    assert ma["splits"]["val"]["tokens"] == mb["splits"]["val"]["tokens"]


def test_sampler_is_a_pure_function_of_position():
    shard = np.arange(1000, dtype=np.uint16) % 50
    s1, s2 = WindowSampler([shard], n_ctx=16, seed=3), WindowSampler([shard], n_ctx=16, seed=3)
    a = s1.batch(0, 200)  # crosses several epochs
    b = s2.batch(100, 100)
    assert a.shape == (200, 17)
    assert (a[100:] == b).all()
    assert s1.windows_in_epoch(0) == 62
    w = eval_windows([shard], n_ctx=16)
    assert (w[w >= 0].numel()) == 999 + len(w)  # every token after the first predicted once
