"""A planted model whose heads have known attention *and* known output effects (head-effect tests).

Attention-only ``HookedTransformer`` without LayerNorm, built on the template stories of
:mod:`tests.support.stories`. Residual dims: one-hot position ``0..n_ctx-1``, then
"is a name" (``n_ctx``), "is BOS" (``n_ctx + 1``), two determiner dims (below) and, per
name token ``k``, an identity dim (``n_ctx + 4 + k``) and an output dim (``n_ctx + 4 + K + k``).

* head 0 — local: attends half to the current and half to the previous token whatever they are
  (TransformerLens previous-token score 0.5) and reads a "determiner comes next" feature (dim
  ``n_ctx + 2``, set on ``pre_det_ids``: tokens usually followed by a determiner) into the
  "determiner output" dim (``n_ctx + 3``), which the unembedding reads as a boost of " the" / " a":
  its direct effect and its ablation effect must land on next-token DET / FUNCTION;
* head 1 — semantic copier: attends to earlier name tokens and copies the name it reads into that
  name's unembedding: its direct effect must land on next-token NAME, its OV copying score is 1;
* head 2 — sink (BOS), head 3 — zero weights (uniform attention, writes nothing).
"""

from __future__ import annotations

import numpy as np
import torch


def make_cast_stories(n: int = 60, seed: int = 0) -> list[str]:
    """Like ``planted_heads.make_stories`` but each story keeps one cast of two names throughout,
    so copying a name seen earlier in the story predicts the next name (the copier has a causal use)."""
    from tests.support.stories import S_ADJS as ADJS, S_NAMES as NAMES, S_NOUNS as NOUNS, S_TEMPLATES as TEMPLATES, \
        S_VERBS as VERBS

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        n1, n2 = rng.choice(NAMES, 2, replace=False)
        sents = []
        for _ in range(int(rng.integers(3, 6))):
            a, b = (n1, n2) if rng.random() < 0.5 else (n2, n1)
            o1, o2 = rng.choice(NOUNS, 2, replace=False)
            a1, a2 = rng.choice(ADJS, 2, replace=False)
            t = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
            sents.append(t.format(name=a, name2=b, noun=o1, noun2=o2, adj=a1, adj2=a2,
                                  verb=VERBS[int(rng.integers(len(VERBS)))]))
        out.append(" ".join(sents))
    return out


def name_token_ids(corpus) -> list[int]:
    """Token ids that are always the first token of a NAME word (PROPN / PERSON) wherever they occur (>= 2 times)."""
    seen: dict[int, list[bool]] = {}
    for s in corpus.stories:
        for t, u, e, c in zip(s.tokens.tolist(), s.upos, s.ent, s.continuation.tolist()):
            seen.setdefault(t, []).append((u == "PROPN" or e == "PERSON") and not c)
    return sorted(t for t, flags in seen.items() if len(flags) >= 2 and all(flags))


def pre_det_token_ids(corpus, min_share: float = 0.5) -> list[int]:
    """Token ids followed by a DET word in at least ``min_share`` of their (>= 2) occurrences."""
    seen: dict[int, list[bool]] = {}
    for s in corpus.stories:
        toks = s.tokens.tolist()
        for i in range(1, len(toks) - 1):
            seen.setdefault(toks[i], []).append(s.upos[i + 1] == "DET" and not s.continuation[i + 1])
    return sorted(t for t, f in seen.items() if len(f) >= 2 and np.mean(f) >= min_share)


def effects_model(tokenizer, name_ids: list[int], det_ids: list[int], pre_det_ids: list[int], n_ctx: int = 64,
                  logit: float = 20.0, boost: float = 4.0):
    """The four-head model of the module docstring."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    K = len(name_ids)
    name_dim, bos_dim, pre_dim, det_dim, id0, out0 = n_ctx, n_ctx + 1, n_ctx + 2, n_ctx + 3, n_ctx + 4, n_ctx + 4 + K
    d_model = n_ctx + 4 + 2 * K
    cfg = HookedTransformerConfig(n_layers=1, d_model=d_model, n_heads=4, d_head=n_ctx, n_ctx=n_ctx,
                                  d_vocab=len(tokenizer), attn_only=True, normalization_type=None,
                                  act_fn="gelu_new", seed=0)
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    scale = logit * np.sqrt(n_ctx)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[tokenizer.bos_token_id, bos_dim] = 1.0
        for k, t in enumerate(name_ids):
            model.embed.W_E[t, name_dim] = 1.0
            model.embed.W_E[t, id0 + k] = 1.0
            model.unembed.W_U[out0 + k, t] = boost
        model.embed.W_E[pre_det_ids, pre_dim] = 1.0
        model.unembed.W_U[det_dim, det_ids] = boost
        model.pos_embed.W_pos[:, :n_ctx] = torch.eye(n_ctx)
        attn = model.blocks[0].attn
        for i in range(1, n_ctx):  # head 0: position i queries positions i and i - 1 equally ...
            attn.W_Q[0, i, i - 1] = scale
            attn.W_Q[0, i, i] = scale
        attn.W_K[0, :n_ctx, :] = torch.eye(n_ctx)
        attn.W_V[0, pre_dim, 0] = 1.0  # ... reads "a determiner usually follows" ...
        attn.W_O[0, 0, det_dim] = 1.0  # ... into the determiner output
        attn.b_Q[1, 0] = scale  # head 1: every query looks for names ...
        attn.W_K[1, name_dim, 0] = 1.0
        for k in range(K):  # ... and copies the identity of the name it reads
            attn.W_V[1, id0 + k, k] = 1.0
            attn.W_O[1, k, out0 + k] = 1.0
        attn.b_Q[2, 0] = scale  # head 2: sink
        attn.W_K[2, bos_dim, 0] = 1.0
    model.eval()
    return model
