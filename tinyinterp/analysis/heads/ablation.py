"""Mean- and resample-ablation of every head, loss change by next-token group (the costly step: two forwards per head).

See :mod:`tinyinterp.analysis.heads.effects` for the groups and for how these numbers are summarised
(story bootstrap).
"""

from __future__ import annotations

import numpy as np
import torch
from einops import einsum
from torch import Tensor

from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.heads.effects import NEXT_GROUPS, _tables, next_groups
from tinyinterp.analysis.engine import eval_mode, iter_batches, plan_batches

__all__ = ["ablation_effects"]


def _next_loss(logits: Tensor, next_ids: Tensor) -> Tensor:
    """``[B, n]`` next-token loss (nats) from ``[B, n, V]`` logits (the last column is meaningless)."""
    return -torch.log_softmax(logits.float(), -1).gather(-1, next_ids[..., None])[..., 0]


def ablation_effects(model, corpus: TaggedCorpus, indices: np.ndarray, mean_z: Tensor, batch_tokens: int = 4096,
                     progress: bool = False) -> dict[str, np.ndarray]:
    """Change in next-token loss when each head's ``hook_z`` is mean- or resample-ablated.

    Returns per-story sums ``{"mean": [S, L*H, G], "resample": [S, L*H, G], "n": [S, G]}`` over the
    stories of ``indices`` (``S = len(corpus)``; other rows stay zero). Each batch runs once clean
    (keeping every layer's ``resid_pre`` and ``z``), then for each head and mode once from that
    head's layer on (``start_at_layer``), so an ablation in layer ``l`` costs ``L - l`` blocks
    plus the unembedding. Resample: the head's ``z`` at the same position of the next story in the
    batch (batches are sorted by length), the corpus mean where that story is shorter.
    """
    from tqdm.auto import tqdm

    cfg = model.cfg
    L, H, G, S = cfg.n_layers, cfg.n_heads, len(NEXT_GROUPS), len(corpus)
    store = corpus.packed()
    tables = _tables(store)
    out = {m: np.zeros((S, L * H, G)) for m in ("mean", "resample")}
    out["n"] = np.zeros((S, G))
    mz = mean_z.to(cfg.device)
    n_batches = len(plan_batches(np.minimum(corpus.lengths(), cfg.n_ctx), max(batch_tokens, cfg.n_ctx), indices))
    bar = tqdm(total=n_batches * L * H * 2, desc="heads: ablations", disable=not progress, leave=False)
    with eval_mode(model), torch.inference_mode():
        for batch in iter_batches(model, corpus, [np.asarray(indices)], batch_tokens):
            idx, tokens, mask = batch.stories, batch.tokens, batch.mask
            n = tokens.shape[1]
            nxt = torch.as_tensor(next_groups(store, idx, n, batch.lengths, tables), device=cfg.device)
            next_ids = torch.cat([tokens[:, 1:], torch.zeros_like(tokens[:, :1])], 1)
            names = [f"blocks.{l}.hook_resid_pre" for l in range(L)] + [f"blocks.{l}.attn.hook_z" for l in range(L)]
            logits, cache = model.run_with_cache(tokens, names_filter=lambda nm: nm in names)
            clean = _next_loss(logits, next_ids)
            out["n"][idx] += nxt.sum(1).double().cpu().numpy()
            donor_ok = torch.roll(mask, -1, 0)  # the donor story (next in the batch) has a token at this position
            for l in range(L):
                z_clean = cache[f"blocks.{l}.attn.hook_z"]  # [B, n, H, e]
                donor = torch.where(donor_ok[..., None, None], torch.roll(z_clean, -1, 0), mz[l][None, None])
                for h in range(H):
                    for mode, src in (("mean", mz[l, h].expand(len(idx), n, -1)), ("resample", donor[:, :, h])):
                        def patch(z: Tensor, hook, h=h, src=src) -> Tensor:
                            z[:, :, h] = src
                            return z

                        ab = model.run_with_hooks(cache[f"blocks.{l}.hook_resid_pre"], start_at_layer=l,
                                                  fwd_hooks=[(f"blocks.{l}.attn.hook_z", patch)])
                        delta = _next_loss(ab, next_ids) - clean  # [B, n]
                        out[mode][idx, l * H + h] += einsum(delta, nxt, "b p, b p g -> b g").double().cpu().numpy()
                        bar.update(1)
    bar.close()
    return out
