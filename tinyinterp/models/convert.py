"""1:1 weight mapping between :class:`TinyTransformer` and ``HookedTransformer``.

=======================  ==============================  ==================================
TinyTransformer          HookedTransformer               reshape
=======================  ==============================  ==================================
wte.weight [V, D]        embed.W_E [V, D]                same
wpe.weight [C, D]        pos_embed.W_pos [C, D]          same
blocks.L.ln1.weight/bias blocks.L.ln1.w/b                same (ln2, ln_f → ln_final alike)
attn.qkv.weight [3HE, D] attn.W_Q/W_K/W_V [H, D, E]      (three h e) d -> three h d e
attn.qkv.bias [3HE]      attn.b_Q/b_K/b_V [H, E]         (three h e) -> three h e
attn.out.weight [D, HE]  attn.W_O [H, E, D]              d (h e) -> h e d
attn.out.bias [D]        attn.b_O [D]                    same
mlp.fc.weight [M, D]     mlp.W_in [D, M]                 transpose (proj → W_out alike)
head.weight [V, D]       unembed.W_U [D, V]              transpose; head.bias → b_U
=======================  ==============================  ==================================

HookedTransformer's non-parameter buffers (``attn.mask``, ``attn.IGNORE``) are filled in
from a freshly built model so the result loads with ``strict=True``.
"""

from __future__ import annotations

import einops
import torch
from torch import Tensor

from tinyinterp.models.transformer import TinyTransformer


def to_hooked_state_dict(model: TinyTransformer, buffers: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Weights of ``model`` under HookedTransformer's names and shapes (fp32, contiguous).

    ``buffers`` (HookedTransformer's non-parameter state) is taken from a freshly built
    ``HookedTransformer`` when not given.
    """
    if buffers is None:
        from tinyinterp.models.hooked import hooked_buffers

        buffers = hooked_buffers(model.cfg)
    s = {k: v.detach().float() for k, v in model.state_dict().items()}
    h, n_layers = model.cfg["n_heads"], model.cfg["n_layers"]
    out: dict[str, Tensor] = {
        "embed.W_E": s["wte.weight"],
        "pos_embed.W_pos": s["wpe.weight"],
        "ln_final.w": s["ln_f.weight"],
        "ln_final.b": s["ln_f.bias"],
        "unembed.W_U": s["head.weight"].T,
        "unembed.b_U": s["head.bias"],
    }
    for i in range(n_layers):
        p, q = f"blocks.{i}.", f"blocks.{i}."
        wq, wk, wv = einops.rearrange(s[p + "attn.qkv.weight"], "(three h e) d -> three h d e", three=3, h=h)
        bq, bk, bv = einops.rearrange(s[p + "attn.qkv.bias"], "(three h e) -> three h e", three=3, h=h)
        out.update({
            q + "ln1.w": s[p + "ln1.weight"], q + "ln1.b": s[p + "ln1.bias"],
            q + "ln2.w": s[p + "ln2.weight"], q + "ln2.b": s[p + "ln2.bias"],
            q + "attn.W_Q": wq, q + "attn.W_K": wk, q + "attn.W_V": wv,
            q + "attn.b_Q": bq, q + "attn.b_K": bk, q + "attn.b_V": bv,
            q + "attn.W_O": einops.rearrange(s[p + "attn.out.weight"], "d (h e) -> h e d", h=h),
            q + "attn.b_O": s[p + "attn.out.bias"],
            q + "mlp.W_in": s[p + "mlp.fc.weight"].T, q + "mlp.b_in": s[p + "mlp.fc.bias"],
            q + "mlp.W_out": s[p + "mlp.proj.weight"].T, q + "mlp.b_out": s[p + "mlp.proj.bias"],
        })
        if buffers:
            for name in ("attn.mask", "attn.IGNORE"):
                if q + name in buffers:
                    out[q + name] = buffers[q + name]
    return {k: v.contiguous() for k, v in out.items()}


def from_hooked_state_dict(cfg: dict, sd: dict[str, Tensor]) -> TinyTransformer:
    """Build a :class:`TinyTransformer` from HookedTransformer weights (inverse mapping)."""
    model = TinyTransformer(cfg)
    g = lambda k: sd[k].float()  # noqa: E731
    new = {
        "wte.weight": g("embed.W_E"),
        "wpe.weight": g("pos_embed.W_pos"),
        "ln_f.weight": g("ln_final.w"),
        "ln_f.bias": g("ln_final.b"),
        "head.weight": g("unembed.W_U").T,
        "head.bias": g("unembed.b_U"),
    }
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        new.update({
            p + "ln1.weight": g(p + "ln1.w"), p + "ln1.bias": g(p + "ln1.b"),
            p + "ln2.weight": g(p + "ln2.w"), p + "ln2.bias": g(p + "ln2.b"),
            p + "attn.qkv.weight": einops.rearrange(
                torch.stack([g(p + "attn.W_Q"), g(p + "attn.W_K"), g(p + "attn.W_V")]), "three h d e -> (three h e) d"),
            p + "attn.qkv.bias": einops.rearrange(
                torch.stack([g(p + "attn.b_Q"), g(p + "attn.b_K"), g(p + "attn.b_V")]), "three h e -> (three h e)"),
            p + "attn.out.weight": einops.rearrange(g(p + "attn.W_O"), "h e d -> d (h e)"),
            p + "attn.out.bias": g(p + "attn.b_O"),
            p + "mlp.fc.weight": g(p + "mlp.W_in").T, p + "mlp.fc.bias": g(p + "mlp.b_in"),
            p + "mlp.proj.weight": g(p + "mlp.W_out").T, p + "mlp.proj.bias": g(p + "mlp.b_out"),
        })
    model.load_state_dict({k: v.contiguous() for k, v in new.items()}, strict=True)
    return model
