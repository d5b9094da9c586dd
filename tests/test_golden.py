"""Golden tests on the bundled checkpoints: loading, greedy generation, evaluation."""

import json

import pytest

from tests.golden.make_golden import GOLDEN, STORIES, bundled, compute

CKPTS = bundled()


def test_bundled_checkpoints_exist():
    assert any("1l" in p.name for p in CKPTS), "checkpoints/ must ship a one-layer model"
    assert GOLDEN.exists(), "run tests/golden/make_golden.py"
    assert set(json.loads(GOLDEN.read_text())) == {p.name for p in CKPTS}


@pytest.mark.golden
@pytest.mark.parametrize("ckpt", CKPTS, ids=[p.name for p in CKPTS])
def test_golden_generation_and_eval(ckpt):
    want = json.loads(GOLDEN.read_text())[ckpt.name]
    got = compute(ckpt)
    assert got["greedy"] == want["greedy"]
    assert got["eval"]["tokens"] == want["eval"]["tokens"]
    assert got["eval"]["bits_per_byte"] == pytest.approx(want["eval"]["bits_per_byte"], abs=1e-4)


@pytest.mark.golden
@pytest.mark.parametrize("ckpt", CKPTS, ids=[p.name for p in CKPTS])
def test_loads_in_plain_hooked_transformer(ckpt):
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    cfg = HookedTransformerConfig(**json.loads((ckpt / "config.json").read_text()))
    model = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(str(ckpt)))
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=True)
    assert model.to_str_tokens("Once upon a time")[0] == "<|endoftext|>"
    loss = model("Once upon a time, there was a little girl named Lily.", return_type="loss")
    assert float(loss) < 4.0  # a trained model, not a random one (random ≈ ln 4096 ≈ 8.3)


@pytest.mark.golden
@pytest.mark.slow
def test_analysis_output_unchanged():
    """`analyze` of ts-1l on its own stories writes the pinned JSON (tests/golden/make_analysis_golden.py)."""
    import gzip

    from tests.golden.make_analysis_golden import GOLDEN as ANALYSIS_GOLDEN
    from tests.golden.make_analysis_golden import compute as compute_analysis
    from tests.support.compare import assert_close

    want = json.loads(gzip.decompress(ANALYSIS_GOLDEN.read_bytes()))
    got = json.loads(json.dumps(compute_analysis(), sort_keys=True))  # tuples -> lists, as stored
    assert got.keys() == want.keys()
    for name in want:
        assert_close(got[name], want[name], name)
