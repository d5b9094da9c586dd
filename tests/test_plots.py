"""Plots build from a real model and from saved results, and show the data they claim to."""

import numpy as np
import pandas as pd
import pytest

from tinyinterp import plots
from tinyinterp.checkpoint import load_model
from tinyinterp.errors import TinyInterpError


def test_attention_heatmap_is_the_models_pattern(tiny_ckpt):
    model = load_model(tiny_ckpt)
    text = "Tom had a red ball."
    fig = plots.plot_attention(model, text, 0, 1)
    _, cache = model.run_with_cache(text)
    np.testing.assert_allclose(np.asarray(fig.data[0].z), cache["pattern", 0][0, 1].numpy(), atol=1e-6)
    assert len(fig.data[0].x) == len(model.to_str_tokens(text))
    other = plots.plot_attention(model, text, 0, 2)
    assert not np.allclose(np.asarray(other.data[0].z), np.asarray(fig.data[0].z))
    with pytest.raises(TinyInterpError, match="does not exist"):
        plots.plot_attention(model, text, 3, 0)


def test_neuron_activation_text(tiny_ckpt):
    model = load_model(tiny_ckpt)
    toks, acts = plots.neuron_activations(model, "Lily saw a big dog.", 0, 5)
    assert toks[0] == "<|endoftext|>" and len(toks) == len(acts)
    assert len(plots.plot_text_activations(toks, acts).data[0].z) == len(toks)
    html = plots.text_activation_html(toks, acts)
    assert html.count("<span") == len(toks)


def test_result_plots():
    heads = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "label": ["local", "semantic", "sink", "mixed"],
                          "positional_r2": [0.9, 0.1, 0.2, 0.3], "content_js": [0.01, 0.3, 0.1, 0.2]})
    grid = plots.plot_head_grid(heads)
    z = np.asarray(grid.data[0].z)
    assert z.shape == (2, 2) and len({*z.ravel()}) == 4  # four labels, four colours
    assert len(plots.plot_head_scatter(heads).data) == 4
    assert "positional_r2 0.900" in grid.data[0].text[0][0]
    assert list(plots.plot_offset_profile([0.1, 0.8, 0.1], 0, 0).data[0].y) == [0.1, 0.8, 0.1]
    neurons = pd.DataFrame({"layer": [0, 0], "neuron": [3, 3], "tag": ["NOUN", "VERB"], "category": ["pos", None],
                            "auroc": [0.95, 0.4], "q_value": [1e-5, 0.9]})
    sel = plots.plot_neuron_selectivity(neurons, 0, 3)
    assert list(sel.data[0].x) == ["NOUN", "VERB"]
    probes = pd.DataFrame({"site": ["embed", "resid0"], "kind": ["embed", "resid"], "accuracy": [0.8, 0.9],
                           "control_accuracy": [0.7, 0.6]})
    assert len(plots.plot_probe_accuracy(probes).data) == 4
