"""Quality figures of an SAE on evaluation windows (SAELens' standard set, computed streaming).

* ``l0``: mean number of active features per token;
* ``fve``: fraction of variance explained, 1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over all tokens;
* ``ce_loss_recovered``: (CE_zero − CE_sae) / (CE_zero − CE_clean), where CE_sae splices the
  reconstruction into the forward pass at the SAE's hook and CE_zero zero-ablates that hook;
* ``dead_fraction``: features that never fire on the evaluation tokens;
  ``dense_fraction``: features firing on more than ``dense_threshold`` of them.

Losses are next-token cross-entropy (nats/token) over every position of each window but the last.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from tinyinterp.sae.features import sae_hook_name, splice_hook, zero_hook


@dataclass
class SAEQuality:
    l0: float
    fve: float
    ce_loss_clean: float
    ce_loss_sae: float
    ce_loss_zero_ablation: float
    ce_loss_recovered: float
    dead_fraction: float
    dense_fraction: float
    tokens: int
    sources: list[dict] = field(default_factory=list)
    stories: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _ce(logits: Tensor, tokens: Tensor) -> Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="sum")


@torch.no_grad()
def sae_quality(model, sae, windows: Int[Tensor, "window pos"], hook: str | None = None, batch_size: int = 8,
                dense_threshold: float = 0.1, progress: bool = True) -> SAEQuality:
    """L0, FVE, CE loss recovered and dead/dense fractions of ``sae`` on ``windows``."""
    hook = sae_hook_name(sae, hook)
    d_in = sae.cfg.d_in
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "err": 0.0, "active": 0.0}
    x_sum = torch.zeros(d_in, dtype=torch.float64)
    x_sq = torch.zeros((), dtype=torch.float64)
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    n_tok = n_pred = 0
    for i in tqdm(range(0, len(windows), batch_size), desc="SAE quality", unit=" batch", disable=not progress, leave=False):
        tok = windows[i: i + batch_size]
        logits, cache = model.run_with_cache(tok, names_filter=[hook])
        x = cache[hook].flatten(0, -2).double()
        f = sae.encode(cache[hook]).flatten(0, -2)
        err = x - sae.decode(f).double()
        active = f > 0
        sums["err"] += float(err.pow(2).sum())
        sums["active"] += float(active.sum())
        fired += active.sum(0).double()
        x_sum += x.sum(0)
        x_sq += x.pow(2).sum()
        n_tok += x.shape[0]
        n_pred += tok[:, 1:].numel()
        sums["clean"] += float(_ce(logits, tok))
        sums["sae"] += float(_ce(model.run_with_hooks(tok, fwd_hooks=[(hook, splice_hook(sae))]), tok))
        sums["zero"] += float(_ce(model.run_with_hooks(tok, fwd_hooks=[(hook, zero_hook)]), tok))
    total_var = float(x_sq - x_sum.pow(2).sum() / max(1, n_tok))
    clean, spliced, zero = (sums[k] / max(1, n_pred) for k in ("clean", "sae", "zero"))
    freq = fired / max(1, n_tok)
    return SAEQuality(
        l0=sums["active"] / max(1, n_tok), fve=1 - sums["err"] / total_var if total_var > 0 else float("nan"),
        ce_loss_clean=clean, ce_loss_sae=spliced, ce_loss_zero_ablation=zero,
        ce_loss_recovered=(zero - spliced) / (zero - clean) if zero != clean else float("nan"),
        dead_fraction=float((fired == 0).double().mean()), dense_fraction=float((freq > dense_threshold).double().mean()),
        tokens=n_tok,
    )


def evaluate_sae(model, sae, data, max_stories: int | None = None, batch_size: int = 8, progress: bool = True,
                 hook: str | None = None) -> SAEQuality:
    """:func:`sae_quality` on the stories of ``data`` (files, folders, globs, ``hf:`` names), cut like training."""
    from tinyinterp.sae.data import token_windows

    windows = token_windows(model.tokenizer, data, model.cfg.n_ctx, max_stories)
    q = sae_quality(model, sae, windows.tokens, hook=hook, batch_size=batch_size, progress=progress)
    q.sources, q.stories = windows.sources, windows.stories
    return q
