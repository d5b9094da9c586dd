"""Names the library exports for the app and notebooks behave like the internals they stand for."""

import pytest

import tinyinterp


def test_every_exported_name_resolves():
    for name in tinyinterp.__all__:
        assert getattr(tinyinterp, name) is not None, name


def test_generate_text_takes_the_fast_model_with_its_tokenizer(tiny_ckpt):
    hooked = tinyinterp.load_model(tiny_ckpt)
    fast, tok = tinyinterp.load_fast_model(tiny_ckpt)
    want = tinyinterp.generate_text(hooked, "Once upon a time", max_new_tokens=8)
    assert tinyinterp.generate_text(fast, "Once upon a time", max_new_tokens=8, tokenizer=tok) == want
    with pytest.raises(tinyinterp.ConfigError, match="tokenizer="):
        tinyinterp.generate_text(fast, "Once upon a time", max_new_tokens=2)
