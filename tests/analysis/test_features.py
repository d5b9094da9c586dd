"""SAE features through the neuron rules: a planted NOUN direction spread over neurons is a ``pos`` feature, no neuron is."""

from __future__ import annotations

import pytest
import torch

from tests.support.planted_features import HOOK, N_TRUE, planted_model, planted_sae, slot_corpus


@pytest.fixture(scope="module")
def planted():
    import tinyinterp
    from tinyinterp.analysis.neurons.matched_ablation import AblationConfig

    torch.set_num_threads(1)
    model = planted_model()
    sae = planted_sae(model)
    corpus = slot_corpus()
    cfg = tinyinterp.FeatureConfig(identity=tinyinterp.IdentityConfig(n_boot=300, n_boot_types=100),
                                   ablation=AblationConfig(n_units=1, n_random=5, n_boot=200, max_stories=60),
                                   name="planted")
    return model, sae, corpus, tinyinterp.find_pos_features(model, corpus, sae, cfg)


def test_planted_direction_is_a_pos_feature_while_no_neuron_is(planted):
    _, _, _, res = planted
    s = res.saes[0]
    noun = [r for r in res.rows if r["tag"] == "NOUN" and r["category"] == "pos"]
    assert [r["feature"] for r in noun] == [0], res.rows
    assert noun[0]["auroc"] > 0.99 and noun[0]["ambiguous_auroc"] > 0.95 and noun[0]["n_top_types"] >= 5
    assert s["neuron_categories_per_tag"]["NOUN"]["pos"] == 0  # the direction is spread: no neuron passes
    row = {r["tag"]: r for r in s["comparison"]}["NOUN"]
    assert row["feature_unit"] == "L0F0" and row["feature_category"] == "pos" and row["n_pos_features"] >= 1
    assert row["neuron_auroc"] < 0.9 and row["neuron_category"] == "none" and row["n_pos_neurons"] == 0
    assert s["best_features"]["NOUN"]["top_tags"] == {"NOUN": 1.0}
    # the lookup cannot read the slot of an ambiguous word: it scores 0.5 there by construction
    assert s["lexical_baseline"]["NOUN"]["lookup"]["ambiguous_auroc"] == pytest.approx(0.5)


def test_feature_ablation_splices_through_the_error_term(planted):
    from tinyinterp.analysis.features.units import encode_columns, splice_ablation_hook

    model, sae, _, res = planted
    abl = {a["tag"]: a for a in res.saes[0]["ablation"]}
    assert abl["NOUN"]["units"] == ["L0F0"] and abl["NOUN"]["n_stories"] == 60
    x = torch.rand(7, sae.cfg.d_in)
    idx = torch.tensor([0, 3])
    torch.testing.assert_close(encode_columns(sae, x, idx), sae.encode(x)[:, idx])
    means = torch.arange(N_TRUE, dtype=torch.float32)
    f = sae.encode(x)
    g = f.clone()
    g[:, idx] = means[idx]
    want = sae.decode(g) + (x - sae.decode(f))  # the brief's definition, literally
    torch.testing.assert_close(splice_ablation_hook(sae)(idx, means)(x), want, atol=1e-5, rtol=1e-5)


def test_results_save_and_load(planted, tmp_path):
    import tinyinterp

    *_, res = planted
    res.save(tmp_path)
    back = tinyinterp.FeatureResults.load(tmp_path)
    assert back.rows[0]["feature"] == res.rows[0]["feature"] and back.saes[0]["name"] == "planted"
    assert (tmp_path / "features.csv").read_text().startswith("sae,feature")
    assert list(back.comparison()["tag"]) == ["NOUN", "VERB"]


def test_sae_on_another_hook_is_one_line_error(planted):
    import tinyinterp

    model, sae, corpus, _ = planted
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    try:
        with pytest.raises(tinyinterp.ConfigError, match="needs an SAE on blocks.L.mlp.hook_post") as err:
            tinyinterp.find_pos_features(model, corpus, sae)
    finally:
        sae.cfg.metadata.hook_name = HOOK
    assert "\n" not in str(err.value)
