"""Interventions and weight-based scores of heads: mean/resample ablation by next-token group, OV copying.

See :mod:`tinyinterp.analysis.head_effects` for the groups and for how these numbers are summarised
(story bootstrap); these two functions are the costly (ablation: two forwards per head) and the
weights-only (copying) parts.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import einsum
from torch import Tensor

from tinyinterp.analysis.corpus import TaggedCorpus
from tinyinterp.analysis.head_effects import NEXT_GROUPS, _tables, next_groups
from tinyinterp.analysis.stream import eval_mode, plan_pass

__all__ = ["ablation_effects", "ov_copying"]


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
    lengths = np.minimum(corpus.lengths(), cfg.n_ctx)
    out = {m: np.zeros((S, L * H, G)) for m in ("mean", "resample")}
    out["n"] = np.zeros((S, G))
    plan = plan_pass(lengths, [np.asarray(indices)], batch_tokens, cfg.n_ctx)
    mz = mean_z.to(cfg.device)
    bar = tqdm(total=len(plan) * L * H * 2, desc="heads: ablations", disable=not progress, leave=False)
    with eval_mode(model), torch.inference_mode():
        for _, idx in plan:
            n = int(lengths[idx].max())
            tokens = torch.from_numpy(store.padded("tokens", idx, n, fill=0)).to(cfg.device)
            mask = torch.arange(n, device=cfg.device)[None, :] < torch.as_tensor(lengths[idx], device=cfg.device)[:, None]
            nxt = torch.as_tensor(next_groups(store, idx, n, lengths[idx], tables), device=cfg.device)
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


def ov_copying(model, token_ids: np.ndarray, top_k: int = 5) -> dict[str, np.ndarray]:
    """OV copying scores ``[L, H]`` of every head on the vocabulary ``token_ids`` (see the module docstring).

    ``eigen``: ``Σ Re λ / Σ |λ|`` of ``W_E W_V W_O W_U`` (computed on the ``d_head``-sized factor,
    which has the same non-zero eigenvalues); ``diag_top``: share of tokens whose own logit is in
    the top ``top_k`` of their row; ``diag_chance``: that share for a random column, ``top_k / n``.
    """
    ids = torch.as_tensor(np.asarray(token_ids, dtype=np.int64))
    W_E = model.W_E.detach().float()[ids]  # [n, d]
    W_U = model.W_U.detach().float()[:, ids]  # [d, n]
    L, H = model.cfg.n_layers, model.cfg.n_heads
    eig, diag = np.zeros((L, H)), np.zeros((L, H))
    for l in range(L):
        for h in range(H):
            A = W_E @ model.W_V[l, h].detach().float()  # [n, e]
            Bm = model.W_O[l, h].detach().float() @ W_U  # [e, n]
            lam = torch.linalg.eigvals(Bm @ A)  # [e, e]: the non-zero eigenvalues of A @ Bm
            eig[l, h] = float(lam.real.sum() / lam.abs().sum().clamp(min=1e-30))
            M = A @ Bm  # [n, n]
            own = M.diagonal()
            ties = (M == own[:, None]).sum(1) - 1  # mid-rank: a head that writes nothing is at chance, not on top
            rank = (M > own[:, None]).sum(1) + ties / 2
            diag[l, h] = float((rank < top_k).float().mean())
    return {"eigen": eig, "diag_top": diag, "diag_chance": np.full((L, H), min(1.0, top_k / max(len(ids), 1)))}
