"""A hand-wired one-layer model whose MLP carries a planted NOUN direction spread over several neurons.

No attention (W_O = 0), no LayerNorm, no positions, ReLU MLP with zero bias: ``hook_post`` is a
function of the current token only. The MLP activations are sparse sums of ``N_TRUE`` non-negative
"true feature" directions, each spread over ``SPREAD`` neurons; features overlap on neurons
(superposition). Feature 0, the planted NOUN direction, is active on exactly the ``NOUNS``
tokens. Every token also carries one or two other true features, so each of the NOUN
neurons also fires for many non-nouns: no single neuron is a clean NOUN detector, while
the direction is. An SAE should recover it as one feature.
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

D_VOCAB, N_TRUE, D_MLP, N_CTX, SPREAD = 64, 24, 32, 16, 8
NOUNS = list(range(1, 13))
HOOK = "blocks.0.mlp.hook_post"


def _directions(g: torch.Generator) -> torch.Tensor:
    """``[N_TRUE, D_MLP]`` non-negative unit directions; row 0 (NOUN) spreads over neurons 0..SPREAD-1."""
    dirs = torch.zeros(N_TRUE, D_MLP)
    dirs[0, :SPREAD] = 1.0
    for j in range(1, N_TRUE):
        support = torch.cat([torch.randperm(SPREAD, generator=g)[:3], SPREAD + torch.randperm(D_MLP - SPREAD, generator=g)[:5]])
        dirs[j, support] = 0.5 + torch.rand(len(support), generator=g)  # 3 of the NOUN neurons, 5 others
    return dirs / dirs.norm(dim=1, keepdim=True)


def planted_model(seed: int = 0) -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=1, d_model=N_TRUE, d_head=8, n_heads=1, d_mlp=D_MLP, d_vocab=D_VOCAB,
                                  n_ctx=N_CTX, act_fn="relu", normalization_type=None, model_name="planted-noun",
                                  seed=seed)
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        W_E = torch.zeros(D_VOCAB, N_TRUE)  # residual dim j = coefficient of true feature j
        for t in range(D_VOCAB):
            others = 1 + torch.randperm(N_TRUE - 1, generator=g)[: 1 + int(torch.rand(1, generator=g) < 0.5)]
            W_E[t, others] = 0.5 + torch.rand(len(others), generator=g)
        W_E[NOUNS, 0] = 0.5 + torch.rand(len(NOUNS), generator=g)
        model.embed.W_E.copy_(W_E)
        model.blocks[0].mlp.W_in.copy_(_directions(torch.Generator().manual_seed(seed + 1)))
        model.unembed.W_U.copy_(torch.randn(N_TRUE, D_VOCAB, generator=g))
    return model.eval()


def planted_direction(seed: int = 0) -> torch.Tensor:
    return _directions(torch.Generator().manual_seed(seed + 1))[0]


def random_windows(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, D_VOCAB, (n, N_CTX), generator=torch.Generator().manual_seed(seed))
