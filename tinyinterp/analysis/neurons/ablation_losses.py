"""Next-token loss under many ablation sets without one full forward pass per set.

:func:`set_losses` returns, per batch of held-out stories, the clean per-position loss and the
loss under each ablation set. Two ways, with equal results (``tests/analysis/test_ablation_losses.py``):

* ``method="forward"`` (the reference): one forward pass of the model per set, with hooks
  that overwrite the ablated units (or splice them through an SAE).
* ``method="auto"``: one clean pass per batch caches, at each ablated layer ``L``, the MLP
  activations (``blocks.L.mlp.hook_post``) and the residual after the block (``resid_post``).
  Ablating units of ``hook_post`` changes the MLP output by a low-rank update
  ``coef @ V`` (``coef [token, k]``, ``V [k, d_model]``): for mean-ablated neurons
  ``coef = mean[S] - act[:, S]`` and ``V = W_out[S]``; for SAE features spliced through the
  error term ``coef = mean[S] - f[:, S]`` and ``V = W_dec[S] @ W_out``. So a set's residual after
  its lowest layer is the cached one plus ``coef @ V``, and the model continues from the next
  layer (``HookedTransformer.forward(start_at_layer=L + 1)``; units in later layers are hooked
  as usual). When that layer is the last one, the rest is the final LayerNorm and the
  unembedding: LayerNorm centres and scales each token, so with ``P = centre(x) * w @ W_U``
  cached once per batch, ``logits' = (P + coef @ (centre(V) * w @ W_U)) / scale' + b @ W_U + b_U``,
  ``k x d_vocab`` multiply-adds per token instead of ``d_model x d_vocab`` plus a whole block.
  Each cheap route also computes the clean loss its own way (once per batch) and reports
  ``clean + (ablated - clean by that route)``, so the route's rounding cancels in the difference.
  Sets the update does not cover (other hooks, nonlinear SAEs, parallel attention/MLP, norms
  after the MLP) fall back to the reference.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tinyinterp.analysis.engine import mlp_hook_layer

__all__ = ["LowRank", "mean_hook", "neuron_low_rank", "set_losses"]

# (hook name, unit indices, means at that hook) -> act -> (coef [..., k], V [k, d_model]): the update to the block's output
LowRank = Callable[[str, Tensor, Tensor], Callable[[Tensor], tuple[Tensor, Tensor]]]


def mean_hook(idx: Tensor, mean: Tensor):
    """Overwrite units ``idx`` of the hooked activation with ``mean[idx]``."""
    def hook(act, hook=None):
        act[..., idx] = mean[idx].to(act.dtype)
        return act
    return hook


def neuron_low_rank(model) -> LowRank:
    """The update of mean-ablated MLP neurons: ``coef = mean[S] - act[:, S]``, ``V = W_out[S]``."""
    def make(hook: str, idx: Tensor, mean: Tensor):
        V = model.blocks[mlp_hook_layer(hook)].mlp.W_out[idx]
        return lambda act: (mean[idx].to(act.dtype) - act[..., idx], V)
    return make


def _low_rank_ok(model) -> bool:
    """Whether ``resid_post = resid_mid + hook_post @ W_out + b_out`` holds in every block."""
    c = model.cfg
    return (not getattr(c, "parallel_attn_mlp", False) and not getattr(c, "use_normalization_before_and_after", False)
            and all(hasattr(getattr(b, "mlp", None), "W_out") for b in model.blocks))


def _final_ok(model) -> bool:
    """Whether the final norm is a LayerNorm (with or without weights) and logits are not soft-capped."""
    from transformer_lens.components import LayerNorm, LayerNormPre

    return isinstance(getattr(model, "ln_final", None), (LayerNorm, LayerNormPre)) and \
        (getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0) <= 0


class _Batch:
    """One clean pass over a batch, cached for the sets evaluated from it."""

    def __init__(self, model, tokens: Tensor, valid: np.ndarray, layers: set[int], final: bool):
        self.model, self.tokens, self.valid_np = model, tokens, valid
        self.valid = torch.as_tensor(valid, device=tokens.device)  # [batch, pos-1]: positions whose loss counts
        names = {f"blocks.{x}.hook_resid_post" for x in layers} | {f"blocks.{x}.mlp.hook_post" for x in layers}
        loss, self.cache = model.run_with_cache(tokens, return_type="loss", loss_per_token=True,
                                                names_filter=lambda n: n in names)
        self.clean = loss.float().cpu().numpy()
        self.last = model.cfg.n_layers - 1
        self._flat: dict[str, Tensor] = {}
        self._base: dict[int | str, np.ndarray] = {}  # the clean loss by each cheap route
        self.final = final and self.last in layers
        if self.final:  # clean logits before the final scale, centre(x) * w @ W_U, on the counted positions only
            ln = model.ln_final
            w = ln.w if hasattr(ln, "w") else torch.ones(model.cfg.d_model, device=tokens.device)
            b = ln.b if hasattr(ln, "b") else torch.zeros_like(w)
            x = self.flat(f"blocks.{self.last}.hook_resid_post")  # [n, d_model]
            self.xc = x - x.mean(-1, keepdim=True)
            self.A = w[:, None] * model.W_U  # [d_model, vocab]
            self.P = self.xc @ self.A  # [n, vocab]
            self.c = b @ model.W_U + model.b_U
            self.target = tokens[:, 1:][self.valid][:, None]  # [n, 1]: the next token

    def flat(self, name: str) -> Tensor:
        """A cached activation at the counted positions: [n, ...]."""
        if name not in self._flat:
            self._flat[name] = self.cache[name][:, :-1][self.valid]
        return self._flat[name]

    def _final(self, coef: Float[Tensor, "n k"], V: Float[Tensor, "k d_model"]) -> np.ndarray:
        """Loss at the counted positions when ``coef @ V`` is added to the last block's output."""
        Vc = V - V.mean(-1, keepdim=True)
        xc = torch.addmm(self.xc, coef, Vc)
        scale = (xc.pow(2).mean(-1, keepdim=True) + self.model.ln_final.eps).sqrt()
        z = torch.addmm(self.P, coef, Vc @ self.A).div_(scale).add_(self.c)  # the logits, [n, vocab]
        return (torch.logsumexp(z, -1) - z.gather(1, self.target)[:, 0]).float().cpu().numpy()

    def final_losses(self, coef: Float[Tensor, "n k"], V: Float[Tensor, "k d_model"]) -> np.ndarray:
        """Loss with the final LayerNorm + unembed done analytically; minus the same formula's clean loss (computed
        once), so its rounding cancels in ablated - clean, plus the forward's clean loss."""
        if "final" not in self._base:
            self._base["final"] = self._final(coef[:, :1] * 0, V[:1] * 0)
        out = self.clean.copy()  # positions that do not count keep the clean loss (difference 0)
        out[self.valid_np] += self._final(coef, V) - self._base["final"]
        return out

    def losses(self, groups: list[tuple[str, Tensor]], means: dict[str, Tensor], low_rank: LowRank, make_hook) -> np.ndarray:
        """Loss under one set (``groups``: hook -> unit indices, every hook an MLP ``hook_post``)."""
        groups = sorted(groups, key=lambda g: mlp_hook_layer(g[0]))
        (h0, ix0), rest = groups[0], groups[1:]
        layer = mlp_hook_layer(h0)
        update = low_rank(h0, ix0, means[h0])
        if not rest and layer == self.last and self.final:
            return self.final_losses(*update(self.flat(h0)))
        coef, V = update(self.cache[h0])
        resid = self.cache[f"blocks.{layer}.hook_resid_post"] + coef @ V
        hooks = [(h, (make_hook or mean_hook)(ix, means[h])) for h, ix in rest]
        return self._continue(resid, layer, hooks) - self._continue_base(layer) + self.clean

    @functools.cached_property
    def mask(self) -> Tensor | None:
        """The attention mask the full forward would use (None unless left padding); only the continued route needs it."""
        return self.model.input_to_embed(self.tokens)[3]

    def _continue(self, resid: Tensor, layer: int, hooks) -> np.ndarray:
        with self.model.hooks(fwd_hooks=hooks):
            loss = self.model(resid, start_at_layer=layer + 1, tokens=self.tokens, return_type="loss",
                              loss_per_token=True, attention_mask=self.mask)
        return loss.float().cpu().numpy()

    def _continue_base(self, layer: int) -> np.ndarray:
        """The clean loss by the same route (continued from ``layer``'s cached output), once per layer."""
        if layer not in self._base:
            self._base[layer] = self._continue(self.cache[f"blocks.{layer}.hook_resid_post"], layer, [])
        return self._base[layer]


def _groups(units: Sequence[tuple[str, int]], dev) -> list[tuple[str, Tensor]]:
    by_hook: dict[str, list[int]] = {}
    for h, i in units:
        by_hook.setdefault(h, []).append(i)
    return [(h, torch.tensor(ix, device=dev)) for h, ix in by_hook.items()]


@torch.no_grad()
def set_losses(model, corpus, stories: np.ndarray, sets: list[list[tuple[str, int]]], means: dict[str, Tensor],
               batch_tokens: int, progress: bool = False, make_hook=None, low_rank: LowRank | None = None,
               method: str = "auto"):
    """Per-position next-token loss, clean and under each ablation set; plus the batches' story/row layout.

    ``sets``: per set its ``(hook, index)`` units; ``means``: per hook the value units are ablated to;
    ``make_hook(idx, means)``: the ablation hook (default: overwrite with the mean); ``low_rank``: the same
    ablation as an update of the block output (default for plain overwrites: :func:`neuron_low_rank`; None with
    a ``make_hook``: every set takes the reference). Returns ``[(story indices, valid [batch, pos-1], clean
    [batch, pos-1], [per set [batch, pos-1]])]`` per batch.
    """
    from tinyinterp.analysis.engine import padded_tokens, plan_batches, story_lengths

    lengths = story_lengths(corpus, model.cfg.n_ctx)
    dev = model.cfg.device
    grouped = [_groups(s, dev) for s in sets]
    if low_rank is None and make_hook is None:
        low_rank = neuron_low_rank(model)
    fast = method == "auto" and low_rank is not None and _low_rank_ok(model)
    cheap = [fast and all(mlp_hook_layer(h) is not None for h, _ in g) for g in grouped]
    layers = {mlp_hook_layer(h) for g, c in zip(grouped, cheap) if c for h, _ in g}
    out = []
    for idx in tqdm(plan_batches(lengths, max(batch_tokens, model.cfg.n_ctx), stories), desc="ablation",
                    disable=not progress, leave=False):
        tokens = padded_tokens(corpus, idx, lengths).to(dev)
        valid = (torch.arange(tokens.shape[1] - 1)[None, :] < torch.as_tensor(lengths[idx] - 1)[:, None]).numpy()
        batch = _Batch(model, tokens, valid, layers if any(cheap) else set(), _final_ok(model))
        ablated = []
        for g, c in zip(grouped, cheap):
            if c and g:
                ablated.append(batch.losses(g, means, low_rank, make_hook))
            else:
                hooks = [(h, (make_hook or mean_hook)(ix, means[h])) for h, ix in g]
                loss = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=hooks)
                ablated.append(loss.float().cpu().numpy())
        out.append((idx, valid, batch.clean, ablated))
    return out
