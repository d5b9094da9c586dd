"""OV copying scores of every head, from the weights alone (Elhage et al. 2021)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ov_copying"]


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
