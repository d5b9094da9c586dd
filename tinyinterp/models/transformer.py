"""The fast training model: a GPT-2-style decoder with exactly HookedTransformer's maths.

Same computation as ``HookedTransformer`` with ``normalization_type="LN"``, standard learned
positions and a GELU MLP, but attention runs through
``torch.nn.functional.scaled_dot_product_attention`` with fused q/k/v weights, which trains
several times faster on CPU for many small heads. :mod:`tinyinterp.models.convert` maps
these weights 1:1 onto HookedTransformer's names and shapes (and back); a test proves the
logits agree to 1e-4.

Optional local attention (``attn_types``/``window_size``, GPT-Neo style) is supported so
converted official TinyStories models can run here too.
"""

from __future__ import annotations

import math
from typing import Any

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

_ACT = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
}


class Attention(nn.Module):
    def __init__(self, cfg: dict[str, Any], layer: int):
        super().__init__()
        self.n_heads, self.d_head = cfg["n_heads"], cfg["d_head"]
        inner = self.n_heads * self.d_head
        self.qkv = nn.Linear(cfg["d_model"], 3 * inner)
        self.out = nn.Linear(inner, cfg["d_model"])
        self.scale = 1.0 / math.sqrt(self.d_head) if cfg.get("use_attn_scale", True) else 1.0
        attn_types = cfg.get("attn_types")
        self.window = cfg.get("window_size") if attn_types and attn_types[layer] == "local" else None


    def forward(self, x: Float[Tensor, "b t d"]) -> Float[Tensor, "b t d"]:
        b, t, _ = x.shape
        q, k, v = einops.rearrange(self.qkv(x), "b t (three h e) -> three b h t e", three=3, h=self.n_heads)
        # no dropout on attention probabilities: on CPU it forces SDPA's slow math path (2-3x slower)
        if self.window is None:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        else:
            i = torch.arange(t, device=x.device)
            dist = i[:, None] - i[None, :]
            mask = (dist >= 0) & (dist < self.window)
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.out(einops.rearrange(z, "b h t e -> b t (h e)"))


class MLP(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.fc = nn.Linear(cfg["d_model"], cfg["d_mlp"])
        self.proj = nn.Linear(cfg["d_mlp"], cfg["d_model"])
        self.act = _ACT[cfg["act_fn"]]

    def forward(self, x: Float[Tensor, "b t d"]) -> Float[Tensor, "b t d"]:
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: dict[str, Any], layer: int, dropout: float):
        super().__init__()
        eps = cfg.get("eps", 1e-5)
        self.ln1 = nn.LayerNorm(cfg["d_model"], eps=eps)
        self.attn = Attention(cfg, layer)
        self.ln2 = nn.LayerNorm(cfg["d_model"], eps=eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Float[Tensor, "b t d"]) -> Float[Tensor, "b t d"]:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


class TinyTransformer(nn.Module):
    """Decoder-only transformer whose weights map 1:1 onto ``HookedTransformer``."""

    def __init__(self, cfg: dict[str, Any], dropout: float = 0.0):
        super().__init__()
        self.cfg = dict(cfg)
        d = cfg["d_model"]
        self.wte = nn.Embedding(cfg["d_vocab"], d)
        self.wpe = nn.Embedding(cfg["n_ctx"], d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(cfg, i, dropout) for i in range(cfg["n_layers"]))
        self.ln_f = nn.LayerNorm(d, eps=cfg.get("eps", 1e-5))
        self.head = nn.Linear(d, cfg.get("d_vocab_out") or cfg["d_vocab"])
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual output projections scaled by 1/sqrt(2L)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:  # LayerNorm weights
                nn.init.ones_(p)
            elif name.endswith(("out.weight", "proj.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg["n_layers"]))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, tokens: Int[Tensor, "b t"]) -> Float[Tensor, "b t v"]:
        t = tokens.shape[1]
        if t > self.cfg["n_ctx"]:
            raise ValueError(f"sequence of {t} tokens is longer than the context n_ctx={self.cfg['n_ctx']}")
        pos = torch.arange(t, device=tokens.device)
        x = self.drop(self.wte(tokens) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def loss(self, tokens: Int[Tensor, "b t1"]) -> Tensor:
        """Mean next-token cross-entropy (nats) of windows ``[b, n_ctx + 1]``; targets < 0 ignored."""
        logits = self(tokens[:, :-1].clamp(min=0))
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=-1)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
