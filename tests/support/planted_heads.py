"""Fixtures for the head tests: a tiny tokenizer and a model with planted heads.

The stories come from :func:`tests.support.stories.sentence_stories` (no TinyStories text).
The planted model is an attention-only ``HookedTransformer`` without LayerNorm whose
residual stream holds a one-hot position (dims ``0..n_ctx-1``) plus two token features:
"is one of the chosen nouns" (dim ``n_ctx``) and "is BOS" (dim ``n_ctx + 1``). Heads:

* 0 — local: query at position i matches key at position i - 1, whatever the tokens;
* 1 — semantic: a constant query matches keys whose token is one of the chosen nouns;
* 2 — sink: a constant query matches the BOS key;
* 3 — all weights zero: uniform attention over the visible keys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

def make_tokenizer(folder: Path, stories: list[str]):
    from tinyinterp.data.tokenizer import load_tokenizer, train_bpe

    train_bpe(stories * 3, folder / "tok", vocab_size=500)
    return load_tokenizer(folder / "tok")


def noun_token_ids(corpus) -> list[int]:
    """Token ids that are always the first token of a NOUN wherever they occur (at least twice)."""
    seen: dict[int, list[bool]] = {}
    for s in corpus.stories:
        for t, u, c in zip(s.tokens.tolist(), s.upos, s.continuation.tolist()):
            seen.setdefault(t, []).append(u == "NOUN" and not c)
    return sorted(t for t, flags in seen.items() if len(flags) >= 2 and all(flags))


def planted_model(tokenizer, noun_ids: list[int], n_ctx: int = 64, logit: float = 20.0):
    """The four-head model described in the module docstring."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    d_model = n_ctx + 2
    cfg = HookedTransformerConfig(n_layers=1, d_model=d_model, n_heads=4, d_head=n_ctx, n_ctx=n_ctx,
                                  d_vocab=len(tokenizer), attn_only=True, normalization_type=None,
                                  act_fn="gelu_new", seed=0)
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    noun_dim, bos_dim = n_ctx, n_ctx + 1
    scale = logit * np.sqrt(n_ctx)  # undo the 1/sqrt(d_head) attention scale
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[noun_ids, noun_dim] = 1.0
        model.embed.W_E[tokenizer.bos_token_id, bos_dim] = 1.0
        model.pos_embed.W_pos[:, :n_ctx] = torch.eye(n_ctx)
        attn = model.blocks[0].attn
        for i in range(1, n_ctx):  # head 0: position i queries position i - 1
            attn.W_Q[0, i, i - 1] = scale
        attn.W_K[0, :n_ctx, :] = torch.eye(n_ctx)
        attn.b_Q[1, 0] = scale  # head 1: every query looks for the noun feature
        attn.W_K[1, noun_dim, 0] = 1.0
        attn.b_Q[2, 0] = scale  # head 2: every query looks for BOS
        attn.W_K[2, bos_dim, 0] = 1.0
    model.eval()
    return model
