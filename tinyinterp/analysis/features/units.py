"""SAE features as units: their activations on a tagged corpus, and the hook that ablates them.

:func:`feature_units` encodes the MLP activations (``blocks.L.mlp.hook_post``, the neuron basis)
of every analysed token with the SAE's encoder and returns them as
:class:`~tinyinterp.analysis.neurons.units.UnitActivations`, with the same tokens, tags, word
types, stories and selection / held-out halves as the neurons of that layer, so the identity
rules, lexical baselines and story-level CIs run on features unchanged. Features that never
fire on the corpus are left out (they cannot be selective); ``unit_meta["feature"]`` keeps
each unit's index in the SAE.

:func:`splice_ablation_hook` is feature ablation through the SAE's error term: the hook's
activation ``x`` becomes ``decode(f') + (x - decode(f))`` where ``f = encode(x)`` and ``f'`` is
``f`` with the ablated features set to their means. Everything the SAE does not explain (the
error term) and every other feature pass through unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tinyinterp.analysis.engine import mlp_hook_layer
from tinyinterp.analysis.neurons.config import NeuronConfig
from tinyinterp.analysis.neurons.job import neuron_activations
from tinyinterp.analysis.neurons.units import UnitActivations
from tinyinterp.errors import ConfigError
from tinyinterp.sae.features import sae_hook_name

__all__ = ["encode_columns", "feature_units", "mlp_layer", "splice_ablation_hook", "splice_low_rank"]


def mlp_layer(sae) -> int:
    """The layer of an SAE on ``blocks.L.mlp.hook_post``; a one-line error for any other hook."""
    hook = sae_hook_name(sae)
    layer = mlp_hook_layer(hook)
    if layer is None:
        raise ConfigError(f"SAE hook {hook!r}: feature analysis compares features with neurons and needs an SAE on "
                          "blocks.L.mlp.hook_post (the neuron basis)")
    return layer


@torch.no_grad()
def encode_columns(sae, x: Float[Tensor, "... d_in"], idx: Tensor) -> Float[Tensor, "... n_idx"]:
    """``sae.encode(x)[..., idx]``, computing only those columns where the activation is per feature
    (ReLU and JumpReLU SAEs); other architectures (TopK) encode everything and slice."""
    kind = type(sae).__name__
    if kind not in ("JumpReLUSAE", "StandardSAE"):
        return sae.encode(x)[..., idx]
    h = sae.process_sae_in(x) @ sae.W_enc[:, idx] + sae.b_enc[idx]
    f = sae.activation_fn(h)
    return f * (h > sae.threshold[idx]).to(f.dtype) if kind == "JumpReLUSAE" else f


def splice_low_rank(model, sae):
    """The splice of :func:`splice_ablation_hook` as an update of the MLP output (``coef = means[S] - f[:, S]``,
    ``V = W_dec[S] @ W_out``) for :mod:`~tinyinterp.analysis.neurons.ablation_losses`; None when ``decode`` is not
    affine (normalised activations): those sets run the full forward."""
    if getattr(sae.cfg, "normalize_activations", "none") != "none":
        return None
    W_out = model.blocks[mlp_layer(sae)].mlp.W_out

    def make(hook: str, idx: Tensor, means: Tensor):
        V = sae.W_dec[idx].to(W_out.dtype) @ W_out
        return lambda act: ((means[idx].to(act.dtype) - encode_columns(sae, act, idx)).to(V.dtype), V)
    return make


def splice_ablation_hook(sae) -> Callable[[Tensor, Tensor], Callable]:
    """``make_hook(idx, means)`` for :func:`~tinyinterp.analysis.neurons.matched_ablation.ablation_table`:
    a hook setting features ``idx`` to ``means[idx]`` through the SAE, error term kept."""
    linear = getattr(sae.cfg, "normalize_activations", "none") == "none"

    def make_hook(idx: Tensor, means: Tensor):
        def hook(act: Tensor, hook=None) -> Tensor:
            W = sae.W_dec[idx]  # [n_idx, d_in]
            target = means[idx].to(act.dtype)
            if linear:  # decode is affine: decode(f') - decode(f) = (f' - f)[idx] @ W_dec[idx]
                return act + (target - encode_columns(sae, act, idx)) @ W
            f = sae.encode(act)
            g = f.clone()
            g[..., idx] = target
            return sae.decode(g) + (act - sae.decode(f))
        return hook

    return make_hook


@torch.no_grad()
def feature_units(model, corpus, sae, split_seed: int = 0, chunk: int = 8192,
                  neurons: UnitActivations | None = None) -> tuple[UnitActivations, UnitActivations]:
    """``(features, neurons)``: the SAE's features and the neurons of its layer on ``corpus``'s analysed tokens.

    ``neurons``: that layer's :func:`neuron_activations` when already computed. Memory: 4 bytes per
    token per neuron and per live feature.
    """
    layer = mlp_layer(sae)
    if sae.cfg.d_in != model.cfg.d_mlp:
        raise ConfigError(f"SAE d_in={sae.cfg.d_in} but the model's d_mlp is {model.cfg.d_mlp}; "
                          "this SAE belongs to another model")
    ua = neurons if neurons is not None else neuron_activations(model, corpus, NeuronConfig(layers=[layer], split_seed=split_seed))
    dev = next(sae.parameters()).device
    acts = np.empty((ua.acts.shape[0], sae.cfg.d_sae), dtype=np.float32)
    for i in range(0, len(acts), chunk):
        acts[i: i + chunk] = sae.encode(torch.from_numpy(ua.acts[i: i + chunk]).to(dev)).float().cpu().numpy()
    alive = np.flatnonzero((acts > 0).any(0))
    feats = dataclasses.replace(ua, acts=np.ascontiguousarray(acts[:, alive]), unit_names=[f"L{layer}F{i}" for i in alive],
                                unit_meta={"layer": np.full(len(alive), layer), "feature": alive})
    return feats, ua


def decoder_norms(model, sae, features: Sequence[int]) -> np.ndarray:
    """Norm of each feature's write to the residual stream (decoder row @ ``W_out``): the ablation's matching statistic."""
    layer = mlp_layer(sae)
    W = sae.W_dec.detach()[torch.as_tensor(np.asarray(features), dtype=torch.long)] @ model.blocks[layer].mlp.W_out.detach()
    return W.norm(dim=1).cpu().numpy()
