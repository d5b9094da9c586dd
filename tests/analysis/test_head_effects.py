"""Head output effects, the two label axes and the paper claim: planted-truth tests.

The planted model (:mod:`tests.support.planted_effects`) has a positional head wired to boost
" the" / " a", a content head that copies names, a sink and an empty head; the thresholds used
here are derived in the test from null heads on the same stories (untrained model of the same
shape, position-only and content-only surrogates), exactly as ``head_nulls`` derives the shipped
ones on the evaluation text.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.support.planted_effects import effects_model, make_cast_stories, name_token_ids, pre_det_token_ids
from tests.support.planted_heads import make_tokenizer
from tinyinterp.analysis.heads import HeadConfig, classify_heads
from tinyinterp.analysis.heads.axes import label_heads
from tinyinterp.analysis.heads.claims import effect_rows, label_agreement_halves, paper_claim, per_layer
from tinyinterp.analysis.heads.ablation import ablation_effects
from tinyinterp.analysis.heads.copying import ov_copying
from tinyinterp.analysis.heads.effects import NEXT_GROUPS, next_groups
from tinyinterp.analysis.heads.nulls import SurrogateSpec, derive_thresholds, null_heads, surrogate_model
from tinyinterp.analysis.corpus import tag_corpus
from tinyinterp.analysis.stats import bootstrap_contrast, story_weights
from tinyinterp.errors import ConfigError

N_CTX = 64
G = {g: i for i, g in enumerate(NEXT_GROUPS)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    stories = make_cast_stories(60)
    tok = make_tokenizer(tmp_path_factory.mktemp("fx"), stories)
    corpus = tag_corpus(stories, tok, N_CTX, use_cache=False, progress=False)
    names = name_token_ids(corpus)
    det = [t for t in range(len(tok)) if tok.decode([t]).strip().lower() in ("the", "a")]
    assert len(names) >= 4 and len(det) >= 2
    model = effects_model(tok, names, det, pre_det_token_ids(corpus), n_ctx=N_CTX)
    return tok, corpus, model


@pytest.fixture(scope="module")
def scores(setup):
    _, corpus, model = setup
    sc = classify_heads(model, corpus, HeadConfig(n_boot=500, progress=False))
    keep = np.arange(len(corpus))
    full = ablation_effects(model, corpus, keep, torch.as_tensor(sc.effects.mean_z))
    sc.effects.ablation = {k: v[keep] for k, v in full.items()}
    return sc


@pytest.fixture(scope="module")
def thresholds(setup):
    _, corpus, model = setup
    t = derive_thresholds(null_heads(model, corpus, untrained_seeds=(0, 1)))
    return HeadConfig(positional_min_r2=t["positional_min_r2"], content_min_js=t["content_min_js"], min_lift=t["min_lift"],
                      n_boot=500, progress=False)


def test_next_groups_mark_the_predicted_token(setup):
    _, corpus, _ = setup
    store = corpus.packed()
    from tinyinterp.analysis.heads.effects import _tables

    s = corpus.stories[0]
    g = next_groups(store, np.array([0]), len(s), np.array([len(s)]), _tables(store))[0]
    for p in range(len(s) - 1):
        start = not s.continuation[p + 1]
        assert g[p, G["ALL"]] == 1
        assert g[p, G["DET"]] == (start and s.upos[p + 1] == "DET")
        assert g[p, G["FUNCTION"]] == (start and s.upos[p + 1] in ("DET", "ADP", "AUX", "PRON", "CCONJ", "SCONJ", "PART"))
    assert g[len(s) - 1].sum() == 0  # the last token predicts nothing


def test_dla_lands_where_the_heads_were_wired(scores):
    r = scores.effects.per_token("dla")
    # the positional head pushes determiners: its largest per-token effect is on DET, well above zero
    assert np.nanargmax(r.estimate[0]) == G["DET"] and r.ci_low[0, G["DET"]] > 0.5
    assert r.ci_low[0, G["FUNCTION"]] > r.ci_high[0, G["CONTENT"]]
    # the copier pushes names: NAME is its largest group, with a CI above zero
    assert np.nanargmax(r.estimate[1, : G["FUNCTION"]]) in (G["NAME"], G["PROPN"]) and r.ci_low[1, G["NAME"]] > 0
    assert r.ci_low[1, G["NAME"]] > r.ci_high[1, G["FUNCTION"]]
    # the empty head contributes nothing
    assert np.allclose(r.estimate[3, G["ALL"]], 0.0, atol=1e-6)


def test_ablation_hurts_where_the_head_helps(scores):
    for mode in ("mean", "resample"):
        r = scores.effects.per_token(mode)
        assert r.ci_low[0, G["DET"]] > 0.3, mode  # loss on determiners rises without the positional head
        assert abs(r.estimate[0, G["NOUN"]]) < 0.1 * r.estimate[0, G["DET"]]
        ok = np.isfinite(r.estimate[3])  # groups absent from the stories are NaN
        assert ok.sum() > 5 and np.allclose(r.estimate[3][ok], 0.0, atol=1e-5)  # a head that writes nothing


def test_ov_copying(setup, scores):
    cp = scores.effects.copying
    assert cp["eigen"][0, 1] == pytest.approx(1.0, abs=1e-4)  # the copier maps each name onto itself
    assert cp["diag_top"][0, 1] > cp["diag_chance"][0, 1]
    assert abs(cp["eigen"][0, 0]) < 1e-6 and abs(cp["eigen"][0, 3]) < 1e-6  # they copy nothing
    _, corpus, model = setup
    ids = np.unique(corpus.packed().flat("tokens"))
    assert ov_copying(model, ids)["eigen"].shape == (1, 4)


def test_attention_conditioned_on_next_token(scores):
    from tinyinterp.analysis.heads.scores import KEY_CATEGORIES

    an = scores.effects.attn_next()
    c = KEY_CATEGORIES.index("NAME")
    # the copier attends to names everywhere; the measure is defined and finite for it
    assert np.isfinite(an.estimate[1, c]) and an.ci_low[1, c] <= an.ci_high[1, c]
    assert abs(an.estimate[3, c]) < 0.1  # uniform attention does not depend on what comes next


def test_position_axis_is_one_for_any_positional_shape(setup):
    tok, corpus, model = setup
    specs = [SurrogateSpec("prev", "prev", 0.0), SurrogateSpec("win", "window32", 0.0), SurrogateSpec("dec", "decay64", 0.0),
             SurrogateSpec("content", None, 2.0), SurrogateSpec("mixed", "prev_soft", 2.0)]
    sur = surrogate_model(tok, model.cfg.d_vocab, N_CTX, specs)
    sc = classify_heads(sur, corpus, HeadConfig(n_boot=200, progress=False))
    r2 = sc.effects.position_r2[0]
    assert np.all(r2[:3] > 0.99), r2  # windows and slow decays too (the offset-profile R² fails them)
    assert r2[3] < 0.5 and 0.05 < r2[4] < 0.99, r2


def test_thresholds_come_from_nulls(thresholds):
    assert 0 < thresholds.positional_min_r2 < 0.9
    assert thresholds.min_lift >= 1.0


def test_planted_labels(scores, thresholds):
    rows = label_heads(scores, thresholds)
    assert [r["label"] for r in rows] == ["local", "semantic", "sink", "mixed"], [(r["label"], r["positional"], r["content"]) for r in rows]
    assert rows[1]["content"]["categories"][0]["category"] in ("NAME", "PROPN")
    assert rows[1]["content"]["categories"][0]["q"] <= thresholds.fdr
    assert rows[0]["positional"]["pass"] and not rows[0]["content"]["pass"]


def test_mixed_surrogate_gets_both_attributes(setup, thresholds):
    tok, corpus, model = setup
    specs = [SurrogateSpec("mixed", "prev_soft", 1.0), SurrogateSpec("pos", "prev", 0.0)]
    sur = surrogate_model(tok, model.cfg.d_vocab, N_CTX, specs, seed=3)
    sc = classify_heads(sur, corpus, HeadConfig(n_boot=300, progress=False))
    labels = [r["label"] for r in label_heads(sc, thresholds)]
    assert labels == ["local+semantic", "local"], labels


def test_paper_claim_holds_on_the_planted_model(scores, thresholds):
    labels = [r["label"] for r in label_heads(scores, thresholds)]
    claim = paper_claim(scores.effects, labels)
    assert claim["local_heads"] == ["L0H0"] and claim["semantic_heads"] == ["L0H1"]
    assert claim["holds"] is True, claim["statement"]
    assert claim["measures"]["dla"]["local"]["function_minus_content"]["ci_low"] > 0
    assert "mean" in claim["measures"] and "resample" in claim["measures"]
    # swap the labels: the same numbers must now contradict the claim
    swapped = paper_claim(scores.effects, ["semantic", "local", "sink", "mixed"])
    assert swapped["holds"] is False and "does not hold" in swapped["statement"]
    none = paper_claim(scores.effects, ["mixed"] * 4)
    assert none["holds"] is None and "Not testable" in none["statement"]


def test_effect_rows_and_per_layer(scores, thresholds):
    rows = label_heads(scores, thresholds)
    eff = effect_rows(scores.effects)
    assert len(eff) == 4 and set(eff[0]["effects"]) == {"dla", "mean", "resample"}
    assert eff[0]["effects"]["dla"]["DET"]["ci_low"] > 0
    pl = per_layer(rows, scores.effects)
    assert pl[0]["labels"] == {"local": 1, "semantic": 1, "sink": 1, "mixed": 1}
    assert pl[0]["peak_offset"]["H0"] in (0, 1)


def test_label_agreement_halves(setup, thresholds):
    _, corpus, model = setup
    agr = label_agreement_halves(model, corpus, thresholds)
    assert agr["n_heads"] == 4 and agr["agreement"] == 1.0, agr
    assert sum(agr["stories"]) == len(corpus)


def test_bootstrap_contrast_matches_direct_difference():
    rng = np.random.default_rng(0)
    sa, ca = rng.random(50) * 3, np.full(50, 2.0)
    sb, cb = rng.random(50), np.full(50, 2.0)
    w = story_weights(50, 400, 1)
    r = bootstrap_contrast(sa, ca, sb, cb, w)
    assert r.estimate == pytest.approx(sa.sum() / ca.sum() - sb.sum() / cb.sum())
    assert r.ci_low < r.estimate < r.ci_high and r.p_value < 1e-3
    same = bootstrap_contrast(sa, ca, sa, ca, w)
    assert same.estimate == 0 and np.allclose([same.ci_low, same.ci_high], 0)


def test_dla_matches_transformer_lens_cache(setup):
    """Per-head DLA equals TransformerLens' ``stack_head_results(apply_ln=True)`` dotted with the
    (LayerNorm-weighted, vocabulary-centred) unembedding of the next token, on a random 2-layer LN model."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from tinyinterp.analysis.heads.effects import EffectsPass
    from tinyinterp.analysis.engine import run_pass

    tok, corpus, _ = setup
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=N_CTX,
                                  d_vocab=len(tok), act_fn="gelu_new", normalization_type="LN", seed=1,
                                  initializer_range=0.3)
    model = HookedTransformer(cfg, tokenizer=tok)
    model.eval()
    with torch.no_grad():
        model.ln_final.w.uniform_(0.5, 1.5)  # a non-trivial LayerNorm weight must be applied
    sub = corpus.subset(np.arange(3))
    fx = EffectsPass(model, sub.packed(), len(sub))
    run_pass(model, sub, [fx])
    for i in range(3):
        toks = torch.as_tensor(sub.story_tokens(i))[None]
        _, cache = model.run_with_cache(toks)
        stack = cache.stack_head_results(layer=-1, apply_ln=True)[:, 0]  # [L*H, pos, d]
        U = model.W_U * model.ln_final.w[:, None]
        U = U - U.mean(1, keepdim=True)
        want = torch.einsum("xpd,dp->x", stack[:, :-1], U[:, toks[0, 1:]]).detach().numpy()
        assert np.allclose(fx.dla[i, :, G["ALL"]], want, rtol=1e-3, atol=1e-3), (fx.dla[i, :, G["ALL"]], want)
    assert fx.OU is not None  # the gathered W_O @ U path; the per-position product (large vocabularies) agrees
    slow = EffectsPass(model, sub.packed(), len(sub))
    slow.OU = None
    run_pass(model, sub, [slow])
    np.testing.assert_allclose(slow.dla, fx.dla, rtol=1e-4, atol=1e-5)


def test_plot_head_effects_and_axes(scores, thresholds):
    import tinyinterp

    rows = label_heads(scores, thresholds)
    for r, e in zip(rows, effect_rows(scores.effects)):
        r["effects"] = e["effects"]
    fig = tinyinterp.plot_head_effects(rows, 0, 0)
    bar = fig.data[0]
    assert list(bar.x)[:3] == ["FUNCTION", "CONTENT", "NAME"] and bar.y[list(bar.x).index("DET")] > 0.5
    assert len(tinyinterp.plot_head_effects(rows, layer=0, kind="mean").data) == 4  # per-layer view: one line per head
    with pytest.raises(ValueError):
        tinyinterp.plot_head_effects(rows, 0, 9)
    ax = tinyinterp.plot_head_axes(rows)
    assert {t.name for t in ax.data} == {"local", "semantic", "sink", "mixed"}


def test_previous_token_heads_are_local_unless_content_says_otherwise(setup, thresholds):
    """The issue's validity rule: a TransformerLens previous-token score >= 0.4 makes a head local even
    when its positional R² misses the threshold; a head whose content axis also passes, with a lift
    that survives BH, is local+semantic (never silently semantic); content JS alone is not evidence."""
    import copy

    tok, corpus, model = setup
    specs = [SurrogateSpec("prev", "prev", 0.0), SurrogateSpec("content", None, 2.0)]
    sur = surrogate_model(tok, model.cfg.d_vocab, N_CTX, specs, seed=5)
    sc = classify_heads(sur, corpus, HeadConfig(n_boot=300, progress=False))
    assert sc.records[0].tl_previous_token >= 0.4 and [r.label for r in sc.records] == ["local", "semantic"]
    hidden = copy.deepcopy(sc)
    hidden.effects.position_r2[:] = 0.0  # as if no head's pattern were explained by position
    hidden.records[1].tl_previous_token = 0.5  # the content head now also scores as a previous-token head
    rows = label_heads(hidden, thresholds)
    assert rows[0]["label"] == "local" and not rows[0]["content"]["pass"], rows[0]["reason"]
    assert rows[1]["label"] == "local+semantic", rows[1]["reason"]
    assert rows[1]["content"]["categories"][0]["q"] <= thresholds.fdr
    no_lift = label_heads(hidden, dataclasses.replace(thresholds, min_lift=1e6))  # JS passes, no category does
    assert no_lift[1]["label"] == "local" and no_lift[1]["content"]["js_pass"], no_lift[1]["reason"]
    below = label_heads(hidden, dataclasses.replace(thresholds, previous_token_min=0.99))
    assert below[0]["label"] == "mixed" and below[1]["label"] == "semantic"


def test_the_axis_label_is_the_record_label(scores, thresholds):
    """One label: HeadRecord.label is the axis label; the pattern rule survives only as pattern_label."""
    assert [r.label for r in scores.records] == [r["label"] for r in scores.axes]
    assert all(r.pattern_label in ("local", "semantic", "sink", "mixed") for r in scores.records)
    assert scores.records[0].axes["positional"]["pass"] and "positional: R²" in scores.records[0].reason
    assert scores.meta["labels"]["local"] + scores.meta["labels"].get("local+semantic", 0) >= 1
    frame = scores.to_frame()
    assert {"label", "pattern_label", "positional_r2", "profile_r2"} <= set(frame.columns)


def test_lift_is_tested_against_the_null_threshold_not_against_one(scores, thresholds):
    """lift_test="min_lift" (default) needs evidence that the lift exceeds min_lift; a lift whose point estimate
    clears min_lift while its CI straddles it passes only the earlier reading (lift_test="one")."""
    x = next(i for i, r in enumerate(scores.axes) if r["content"]["pass"])
    best = scores.axes[x]["content"]["categories"][0]
    assert best["ci_low"] < best["lift"]
    straddle = (best["lift"] + best["ci_low"]) / 2  # below the estimate, inside its CI
    one = label_heads(scores, dataclasses.replace(thresholds, min_lift=straddle, lift_test="one"))[x]
    strict = label_heads(scores, dataclasses.replace(thresholds, min_lift=straddle, lift_test="min_lift"))[x]
    assert one["content"]["pass"] and not strict["content"]["pass"], (one["reason"], strict["reason"])
    assert strict["content"]["categories"][0]["null"] == straddle and one["content"]["categories"][0]["null"] == 1.0
    with pytest.raises(ConfigError, match="lift_test"):
        HeadConfig(lift_test="bogus")
