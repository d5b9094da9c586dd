"""SAE features as units, like neurons: their activations, and hooks that splice the SAE into a model.

:func:`feature_activations` returns ``[batch, pos, d_sae]`` for token batches, the same
shape the neuron pipeline reads from ``blocks.L.mlp.hook_post`` (``[batch, pos, d_mlp]``),
so statistics written for neurons can take features unchanged. :func:`splice_hook` replaces
the hook's activations by the SAE's reconstruction (quality), or keeps them exact and only
removes chosen features' contributions (feature ablation: reconstruction with those
features zeroed + the SAE's error term).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tinyinterp.errors import ConfigError

HookFn = Callable[[Tensor, object], Tensor]


def sae_hook_name(sae, hook: str | None = None) -> str:
    """The hook ``sae`` reads (from its metadata), or ``hook`` when given."""
    name = hook or sae.cfg.metadata.hook_name
    if not name:
        raise ConfigError("the SAE's config does not name its hook; pass hook=... (e.g. blocks.0.mlp.hook_post)")
    return name


def _stop_layer(model, hook: str) -> int | None:
    if hook.startswith("blocks."):
        layer = int(hook.split(".")[1])
        return layer + 1 if layer + 1 < model.cfg.n_layers else None
    return 0


@torch.no_grad()
def hook_activations(model, tokens: Int[Tensor, "batch pos"], hook: str) -> Float[Tensor, "batch pos d_in"]:
    """Activations of ``hook`` on ``tokens`` (the forward pass stops after the block it needs)."""
    _, cache = model.run_with_cache(tokens, names_filter=[hook], stop_at_layer=_stop_layer(model, hook))
    return cache[hook]


@torch.no_grad()
def feature_activations(model, sae, tokens: Int[Tensor, "batch pos"], hook: str | None = None,
                        batch_size: int = 16) -> Float[Tensor, "batch pos d_sae"]:
    """SAE feature activations on ``tokens``, ``[batch, pos, d_sae]`` (like MLP neuron activations)."""
    hook = sae_hook_name(sae, hook)
    out = [sae.encode(hook_activations(model, tokens[i: i + batch_size], hook))
           for i in range(0, len(tokens), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, tokens.shape[1], sae.cfg.d_sae))


def feature_contribution(sae, acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
    """What ``acts`` add to the SAE's reconstruction (decode(acts) minus the decoder bias)."""
    return sae.decode(acts) - sae.decode(torch.zeros_like(acts[..., :1, :]))


def splice_hook(sae, ablate: Sequence[int] | Tensor | None = None) -> HookFn:
    """A TransformerLens hook function for the SAE's hook.

    ``ablate=None``: return the SAE's reconstruction (the activations as the SAE sees them).
    ``ablate=[i, j, …]``: return the true activations minus features ``i, j, …``'s contributions,
    i.e. the reconstruction with those features zeroed plus the error term, so nothing but the
    ablated features changes.
    """
    idx = None if ablate is None else torch.as_tensor(ablate, dtype=torch.long)
    if idx is not None and idx.numel() and (idx.min() < 0 or idx.max() >= sae.cfg.d_sae):
        raise ConfigError(f"ablate: feature ids must be in [0, {sae.cfg.d_sae}); got {idx.tolist()[:5]}")

    def hook_fn(act: Tensor, hook=None) -> Tensor:
        f = sae.encode(act)
        if idx is None:
            return sae.decode(f).to(act.dtype)
        kept = torch.zeros_like(f)
        kept[..., idx] = f[..., idx]
        return act - feature_contribution(sae, kept).to(act.dtype)

    return hook_fn


def zero_hook(act: Tensor, hook=None) -> Tensor:
    return torch.zeros_like(act)


@torch.no_grad()
def run_with_sae(model, sae, tokens: Int[Tensor, "batch pos"], ablate: Sequence[int] | None = None,
                 hook: str | None = None) -> Float[Tensor, "batch pos vocab"]:
    """Logits with the SAE spliced in (see :func:`splice_hook`)."""
    return model.run_with_hooks(tokens, fwd_hooks=[(sae_hook_name(sae, hook), splice_hook(sae, ablate))])
