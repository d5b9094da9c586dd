"""Post-training touch-ups of a JumpReLU/TopK SAE on *training* activations (never the evaluation stories).

* :func:`calibrate_threshold` sets a JumpReLU SAE's (global) threshold so that the mean L0 on
  the given activations equals ``target_l0``. BatchTopK training stores the running minimum of
  the kept activations as the threshold, which lands a little below or above ``k`` at inference.
* :func:`refit_decoder` keeps the encoder (which features fire, and how strongly) and solves for
  the decoder by least squares: the MSE-optimal linear read-out of those features.

Both are a few lines of linear algebra; SAELens has no equivalent. They change the saved SAE's
weights, so the card records that they ran (``metadata.tinyinterp.refit``).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from tinyinterp.errors import ConfigError


@torch.no_grad()
def calibrate_threshold(sae, x: Float[Tensor, "n d_in"], target_l0: float) -> float:
    """Set a JumpReLU SAE's threshold (one value for all features) so mean L0 on ``x`` is ``target_l0``."""
    if not hasattr(sae, "threshold"):
        raise ConfigError("calibrate_threshold: only JumpReLU SAEs (e.g. trained as batchtopk) have a threshold")
    pre = torch.relu(sae.process_sae_in(x) @ sae.W_enc + sae.b_enc)
    k = int(round(target_l0 * len(x)))
    values = pre.flatten()
    value = float(torch.topk(values, k + 1).values[-1]) if 0 < k < values.numel() else 0.0
    sae.threshold.fill_(value)
    return value


@torch.no_grad()
def refit_decoder(sae, x: Float[Tensor, "n d_in"], ridge: float = 1e-4) -> None:
    """Least-squares ``W_dec`` for the features the encoder gives on ``x`` (encoder and ``b_dec`` unchanged).

    Solves min ‖(x − b_dec) − f W_dec‖² over the rows of live features (a small ridge, relative to
    the Gram matrix's mean diagonal, keeps rare features stable). Needs a linear decoder
    (``decode(f) = f @ W_dec + b_dec``), which SAELens' inference SAEs have.
    """
    d_sae = sae.cfg.d_sae
    gram = torch.zeros(d_sae, d_sae, dtype=torch.float64)
    rhs = torch.zeros(d_sae, x.shape[1], dtype=torch.float64)
    for i in range(0, len(x), 8192):  # chunked: the dense [n, d_sae] activations are never held whole
        chunk = x[i: i + 8192]
        f = sae.encode(chunk).double()
        gram += f.T @ f
        rhs += f.T @ (chunk.double() - sae.b_dec.double())
    live = gram.diagonal() > 0
    gram = gram[live][:, live]
    gram.diagonal().add_(ridge * gram.diagonal().mean())
    sol = torch.linalg.solve(gram, rhs[live])
    sae.W_dec[live] = sol.to(sae.W_dec.dtype)


def refit_on_training_data(model, sae, data, n_tokens: int, target_l0: float, seed: int = 1,
                           hook: str | None = None) -> dict:
    """:func:`calibrate_threshold` (JumpReLU only) then :func:`refit_decoder` on ``n_tokens`` activations
    from random windows of the training stories ``data``; returns what was done (for the card)."""
    from tinyinterp.sae.data import token_windows
    from tinyinterp.sae.features import hook_activations, sae_hook_name

    hook = sae_hook_name(sae, hook)
    windows = token_windows(model.tokenizer, data, model.cfg.n_ctx, shuffle_seed=seed).tokens
    windows = windows[: max(1, -(-n_tokens // model.cfg.n_ctx))]
    x = torch.cat([hook_activations(model, windows[i: i + 16], hook).flatten(0, 1) for i in range(0, len(windows), 16)])
    done = {"tokens": int(len(x)), "seed": seed, "data": "training stories (random windows)"}
    if hasattr(sae, "threshold"):
        done["threshold"] = calibrate_threshold(sae, x, target_l0)
        done["target_l0"] = target_l0
    refit_decoder(sae, x)
    done["decoder"] = "least squares on the encoder's features"
    return done
