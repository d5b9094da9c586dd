"""SAE training (SAELens runner on our model), loading, quality, splicing and dashboards on tiny models."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import tinyinterp
from tinyinterp.errors import CheckpointError, ConfigError, DataError
from tinyinterp.sae.config import SAETrainConfig

TINY = dict(d_sae=64, k=4, training_tokens=256 * 24, batch_size=256, buffer_tokens=1024, store_batch_windows=8,
            lr=3e-3, lr_warm_up_steps=2, checkpoints=0)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_ckpt, corpus_files):
    """A tiny SAE trained through the public API on the micro checkpoint (no socket may connect), saved in SAELens' format."""
    import socket
    from unittest import mock

    out = tmp_path_factory.mktemp("sae") / "blocks.0.mlp.hook_post"
    with mock.patch.object(socket.socket, "connect", side_effect=AssertionError("network access during SAE training")):
        sae = tinyinterp.train_sae(tiny_ckpt, out=out, data=[str(corpus_files["train"])], **TINY)
    return out, sae


def test_trained_sae_loads_with_sae_lens_directly(trained, tiny_ckpt):
    from sae_lens import SAE

    out, sae = trained
    direct = SAE.load_from_disk(str(out))
    assert direct.cfg.d_in == 128 and direct.cfg.d_sae == 64
    assert direct.cfg.metadata.hook_name == "blocks.0.mlp.hook_post"
    assert torch.equal(direct.W_dec, sae.W_dec)
    card = (out / "README.md").read_text()
    assert "sha256" in card and "blocks.0.mlp.hook_post" in card
    meta = json.loads((out / "cfg.json").read_text())["metadata"]["tinyinterp"]
    assert meta["data"]["sources"][0]["sha256"] and meta["model"]["weights_sha256"]


def test_rerun_with_same_inputs_does_not_train(trained, tiny_ckpt, corpus_files, monkeypatch):
    from tinyinterp.sae import train

    out, sae = trained
    monkeypatch.setattr(train, "_run", lambda *a, **k: pytest.fail("retrained although nothing changed"))
    again = tinyinterp.train_sae(tiny_ckpt, out=out, data=[str(corpus_files["train"])], **TINY)
    assert torch.equal(again.W_enc, sae.W_enc)


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, tiny_ckpt, corpus_files, monkeypatch):
    from sae_lens.training.sae_trainer import SAETrainer

    out = tmp_path / "sae"
    cfg = {**TINY, "checkpoints": 2}
    original = SAETrainer._checkpoint_if_needed
    calls = {"n": 0}

    def interrupt_after_first_checkpoint(self):
        before = len(self.checkpoint_thresholds)
        original(self)
        if len(self.checkpoint_thresholds) < before:
            calls["n"] += 1
            raise KeyboardInterrupt

    monkeypatch.setattr(SAETrainer, "_checkpoint_if_needed", interrupt_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        tinyinterp.train_sae(tiny_ckpt, out=out, data=[str(corpus_files["train"])], **cfg)
    assert not out.exists() and (tmp_path / ".sae.resume").is_dir()
    monkeypatch.setattr(SAETrainer, "_checkpoint_if_needed", original)
    sae = tinyinterp.train_sae(tiny_ckpt, out=out, data=[str(corpus_files["train"])], **cfg)
    assert sae.cfg.metadata.tinyinterp["resumed_at_tokens"] > 0
    assert (out / "cfg.json").exists() and not (tmp_path / ".sae.resume").exists()


def test_feature_activations_and_splicing(trained, tiny_ckpt):
    from tinyinterp.sae.features import feature_activations, run_with_sae, splice_hook

    _, sae = trained
    model = tinyinterp.load_model(tiny_ckpt)
    tokens = torch.randint(1, model.cfg.d_vocab, (3, 20), generator=torch.Generator().manual_seed(0))
    acts = feature_activations(model, sae, tokens)
    assert acts.shape == (3, 20, 64) and (acts >= 0).all()
    with torch.no_grad():
        clean = model(tokens)
        # ablating no feature = reconstruction + error term = the clean forward pass
        torch.testing.assert_close(run_with_sae(model, sae, tokens, ablate=[]), clean, atol=1e-4, rtol=1e-4)
        # ablating the features that fire removes exactly their decoder contributions
        x = torch.randn(5, sae.cfg.d_in).abs()
        f = sae.encode(x)
        on = torch.nonzero(f.sum(0)).flatten().tolist()
        ablated = splice_hook(sae, ablate=on)(x)
        torch.testing.assert_close(ablated, x - (sae.decode(f) - sae.b_dec), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="feature ids"):
        splice_hook(sae, ablate=[64])


def test_quality_figures_are_consistent(trained, tiny_ckpt, corpus_files):
    from tinyinterp.sae.quality import evaluate_sae

    _, sae = trained
    model = tinyinterp.load_model(tiny_ckpt)
    q = evaluate_sae(model, sae, corpus_files["eval"], progress=False)
    assert q.tokens > 0 and 0 < q.l0 < 64 and q.fve < 1
    assert q.ce_loss_zero_ablation > q.ce_loss_clean  # zero-ablating the MLP hurts
    assert q.ce_loss_recovered == pytest.approx(
        (q.ce_loss_zero_ablation - q.ce_loss_sae) / (q.ce_loss_zero_ablation - q.ce_loss_clean))
    assert 0 <= q.dead_fraction <= 1 and 0 <= q.dense_fraction <= 1
    assert q.sources[0]["sha256"]


def test_quality_of_a_perfect_reconstruction_is_one(tiny_ckpt, corpus_files):
    """An SAE whose dictionary is the identity on the neurons (and k = d_in) recovers everything."""
    from sae_lens import TopKSAE, TopKSAEConfig

    from tinyinterp.sae.quality import evaluate_sae

    model = tinyinterp.load_model(tiny_ckpt)
    d = model.cfg.d_mlp
    sae = TopKSAE(TopKSAEConfig(d_in=d, d_sae=d, k=d, apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.fill_(10.0)  # GELU outputs are > -0.17: shifted up so every unit passes the ReLU
        sae.b_dec.fill_(-10.0)
    sae.cfg.metadata.hook_name = "blocks.0.mlp.hook_post"
    q = evaluate_sae(model, sae, corpus_files["eval"], max_stories=10, progress=False)
    assert q.fve == pytest.approx(1.0, abs=1e-5) and q.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)


def test_planted_noun_direction_becomes_one_feature():
    """A NOUN direction spread over 8 neurons (none a clean NOUN detector) is recovered as one SAE feature."""
    from sklearn.metrics import roc_auc_score

    from tests.sae.planted import HOOK, NOUNS, planted_direction, planted_model, random_windows
    from tinyinterp.sae.features import feature_activations, hook_activations

    model = planted_model()
    sae = tinyinterp.train_sae(model, tokens=random_windows(2000), hook=HOOK, d_sae=32, k=2.5,
                               training_tokens=256 * 400, batch_size=256, buffer_tokens=4096, checkpoints=0,
                               lr=3e-3, lr_warm_up_steps=10, store_batch_windows=64)
    tokens = random_windows(200, seed=1)
    is_noun = torch.isin(tokens, torch.tensor(NOUNS)).flatten().numpy()
    feats = feature_activations(model, sae, tokens).flatten(0, 1)
    neurons = hook_activations(model, tokens, HOOK).flatten(0, 1)
    feature_auc = [roc_auc_score(is_noun, feats[:, j]) for j in range(feats.shape[1])]
    neuron_auc = [roc_auc_score(is_noun, neurons[:, j]) for j in range(neurons.shape[1])]
    best = max(range(len(feature_auc)), key=feature_auc.__getitem__)
    cos = torch.nn.functional.cosine_similarity(sae.W_dec[best], planted_direction(), dim=0)
    assert max(neuron_auc) < 0.95  # no single neuron is a clean NOUN detector
    assert feature_auc[best] > 0.99 and cos > 0.8


def test_user_sae_trained_by_sae_lens_loads(tiny_ckpt, tmp_path):
    """An SAE a user trains with SAELens itself (its runner, its format) on one of our checkpoints loads."""
    import datasets
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig, StandardTrainingSAEConfig

    model = tinyinterp.load_model(tiny_ckpt)
    tokens = torch.randint(1, model.cfg.d_vocab, (64, 32), generator=torch.Generator().manual_seed(0))
    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=48), model_name=model.cfg.model_name,
        hook_name="blocks.0.hook_resid_post", context_size=32, training_tokens=2048, train_batch_size_tokens=256,
        n_batches_in_buffer=16, store_batch_size_prompts=8, logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None, output_path=str(tmp_path / "user_sae"), verbose=False)
    LanguageModelSAETrainingRunner(cfg, override_dataset=datasets.Dataset.from_dict({"tokens": tokens.numpy()}),
                                   override_model=model).run()
    sae = tinyinterp.load_sae(tmp_path / "user_sae", model=model)
    assert sae.cfg.d_in == model.cfg.d_model
    from tinyinterp.sae.features import feature_activations

    assert feature_activations(model, sae, tokens[:2]).shape == (2, 32, 48)


@pytest.mark.parametrize("damage, match", [
    ("missing", "no such SAE folder"),
    ("no_weights", "sae_weights.safetensors: missing"),
    ("bad_json", "not valid JSON"),
    ("bad_weights", "unreadable safetensors"),
    ("d_in", "W_enc has shape"),
    ("hook", "not 'blocks.0.hook_resid_post'"),
    ("model", "trained on model 'other-model'"),
    ("width", "has width"),
])
def test_bad_sae_inputs_give_one_line_errors(trained, tiny_ckpt, tmp_path, damage, match):
    from tinyinterp.sae.load import load_sae

    src, _ = trained
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "cfg.json").read_text())
    hook = None
    if damage == "missing":
        shutil.rmtree(bad)
    elif damage == "no_weights":
        (bad / "sae_weights.safetensors").unlink()
    elif damage == "bad_json":
        (bad / "cfg.json").write_text("{not json")
    elif damage == "bad_weights":
        (bad / "sae_weights.safetensors").write_bytes(b"\x00" * 50)
    elif damage == "d_in":
        cfg["d_in"] = 32
    elif damage == "hook":
        hook = "blocks.0.hook_resid_post"
    elif damage == "model":
        cfg["metadata"]["model_name"] = "other-model"
    elif damage == "width":  # a consistent SAE for a 32-wide hook declared on hook_post (128 wide)
        from sae_lens import TopKSAE, TopKSAEConfig

        shutil.rmtree(bad)
        other = TopKSAE(TopKSAEConfig(d_in=32, d_sae=8, k=2))
        other.cfg.metadata.hook_name = "blocks.0.mlp.hook_post"
        other.save_model(bad)
        cfg = json.loads((bad / "cfg.json").read_text())
    if damage in ("d_in", "model"):
        (bad / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match) as err:
        load_sae(bad, model=tinyinterp.load_model(tiny_ckpt), hook=hook)
    assert "\n" not in str(err.value)


def test_cli_train_eval_features_and_errors(tmp_path, tiny_ckpt, corpus_files, capsys):
    from tinyinterp.cli.main import main

    out = tmp_path / "sae"
    args = ["sae", "train", str(tiny_ckpt), "--data", str(corpus_files["train"]), "--out", str(out),
            "--eval", str(corpus_files["eval"]), "--save-dtype", "float16", "--refit-tokens", "1024"]
    args += [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["tokens"] > 0 and "ce_loss_recovered" in row
    card = (out / "README.md").read_text()
    assert "CE loss recovered" in card and "after refit" in card and "Refit after training" in card
    from sae_lens import SAE

    assert SAE.load_from_disk(str(out)).W_dec.dtype == torch.float32  # stored as float16, loads as float32
    assert main(["sae", "eval", str(out), "--model", str(tiny_ckpt), "--data", str(corpus_files["eval"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["l0"] > 0
    assert main(["sae", "features", str(out), "--model", str(tiny_ckpt), "--feature", "0", "1", "--ablation",
                 "--text", "Once upon a time there was a little cat.", "--examples", "3"]) == 0
    boards = json.loads(capsys.readouterr().out)
    assert [b["feature"] for b in boards] == [0, 1] and len(boards[0]["promoted"]) == 10
    assert all(isinstance(b["ablation_loss_delta"], float) for b in boards)
    assert main(["sae", "eval", str(tmp_path / "nope"), "--model", str(tiny_ckpt), "--data", str(corpus_files["eval"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert main(["sae", "train", str(tiny_ckpt), "--data", str(corpus_files["train"]), "--out", str(out), "--k", "0"]) == 2


def test_dashboard_top_examples_histogram_and_logit_effects(trained, tiny_ckpt):
    from tinyinterp.sae.dashboard import feature_dashboards, logit_effects

    _, sae = trained
    model = tinyinterp.load_model(tiny_ckpt)
    texts = ["Once upon a time there was a little dog.", "Tom and Lily played with a red ball in the park."]
    boards = feature_dashboards(model, sae, texts, n_examples=5)
    assert len(boards) == 64
    fired = [b for b in boards if b.examples]
    assert fired
    for b in fired:
        acts = [e.activation for e in b.examples]
        assert acts == sorted(acts, reverse=True) and acts[0] == pytest.approx(b.max_activation)
        e = b.examples[0]
        assert e.acts[e.peak] == pytest.approx(e.activation) and len(e.tokens) == len(e.acts)
        assert sum(b.hist_counts) == round(b.frac_active * sum(len(model.to_tokens(t)[0]) for t in texts))
    # logit effects are the decoder direction through W_out and W_U
    f = fired[0].feature
    effect = sae.W_dec[f] @ model.blocks[0].mlp.W_out @ model.W_U
    promoted, suppressed = logit_effects(model, sae, [f], k=3)[f]
    assert promoted[0][1] == pytest.approx(float(effect.max()), rel=1e-4)
    assert suppressed[0][1] == pytest.approx(float(effect.min()), rel=1e-4)
    # ablating a feature that never fires changes nothing; one that fires changes the loss
    silent = [b.feature for b in boards if not b.examples]
    some = feature_dashboards(model, sae, texts, features=[f, *silent[:1]], ablation=True)
    assert some[0].ablation_loss_delta != 0
    if silent:
        assert some[1].ablation_loss_delta == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="out of range"):
        feature_dashboards(model, sae, texts, features=[64])


def test_config_validation_and_bad_tokens(tiny_ckpt):
    with pytest.raises(ConfigError, match="hook="):
        SAETrainConfig(hook="blocks.0.attn.hook_pattern")
    with pytest.raises(ConfigError, match="k="):
        SAETrainConfig(architecture="topk", k=2.5)
    with pytest.raises(ConfigError, match="buffer_tokens"):
        SAETrainConfig(buffer_tokens=16, batch_size=32)
    model = tinyinterp.load_model(tiny_ckpt)
    with pytest.raises(ConfigError, match="no such hook"):
        tinyinterp.train_sae(model, tokens=torch.zeros(4, 64, dtype=torch.long), hook="blocks.3.mlp.hook_post")
    with pytest.raises(DataError, match="ids must be in"):
        tinyinterp.train_sae(model, tokens=torch.full((4, 64), 10_000), hook="blocks.0.mlp.hook_post")


def test_refit_calibrates_l0_and_never_worsens_the_fit(trained, tiny_ckpt, corpus_files):
    from sae_lens import JumpReLUSAE

    from tinyinterp.sae.features import hook_activations
    from tinyinterp.sae.load import load_sae
    from tinyinterp.sae.refit import refit_on_training_data

    out, _ = trained
    model = tinyinterp.load_model(tiny_ckpt)
    sae = load_sae(out, model=model)
    assert isinstance(sae, JumpReLUSAE)  # batchtopk is saved as JumpReLU
    from tinyinterp.sae.data import token_windows

    held_out = token_windows(model.tokenizer, corpus_files["eval"], model.cfg.n_ctx).tokens
    x = hook_activations(model, held_out, "blocks.0.mlp.hook_post").flatten(0, 1)

    @torch.no_grad()
    def mse(s):
        return float((s.decode(s.encode(x)) - x).pow(2).sum(-1).mean())

    done = refit_on_training_data(model, sae, [str(corpus_files["train"])], n_tokens=2048, target_l0=3.0)
    assert done["tokens"] >= 2048 and done["target_l0"] == 3.0
    # the threshold gives L0 = 3 on the refit activations; on held-out stories of the same kind, near 3
    assert 1.5 < float((sae.encode(x) > 0).sum(-1).float().mean()) < 4.5
    before = load_sae(out, model=model)
    with torch.no_grad():
        before.threshold.fill_(done["threshold"])  # same encoder, old decoder
    assert mse(sae) <= mse(before) * 1.05  # least squares on training activations: no worse on fresh ones
