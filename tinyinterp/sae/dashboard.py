"""Per-feature dashboard data (the backend of the explorer's Features page; no UI code here).

For each feature: its top activations on the texts given (model-written stories or the
user's own text; each example keeps a window of tokens with their activations), a histogram
of its nonzero activations, and its logit effects: the decoder direction mapped to the
residual stream (through ``W_out`` for an MLP ``hook_post`` SAE) and read out with ``W_U``
(the direct path, final LayerNorm scale ignored), listing the tokens it promotes and suppresses;
optionally the change in next-token loss on the texts when the feature alone is ablated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tinyinterp.errors import ConfigError
from tinyinterp.sae.features import feature_activations, sae_hook_name


@dataclass
class FeatureExample:
    text: int  # index into the texts given
    position: int  # token position of the peak (0 = the <|endoftext|> prefix)
    activation: float
    tokens: list[str]  # a window of tokens around the peak
    acts: list[float]  # the feature's activation on each of them
    peak: int  # index of the peak within ``tokens``


@dataclass
class FeatureDashboard:
    feature: int
    frac_active: float  # share of the tokens it fires on
    max_activation: float
    examples: list[FeatureExample] = field(default_factory=list)
    hist_counts: list[int] = field(default_factory=list)  # nonzero activations per bin
    hist_edges: list[float] = field(default_factory=list)
    promoted: list[tuple[str, float]] = field(default_factory=list)  # (token, logit effect), largest first
    suppressed: list[tuple[str, float]] = field(default_factory=list)  # most negative first
    ablation_loss_delta: float | None = None  # mean change of next-token loss (nats/token) when the feature is ablated

    def to_json(self) -> dict:
        return asdict(self)


def decoder_to_residual(model, sae, hook: str | None = None) -> Float[Tensor, "d_sae d_model"]:
    """Each feature's decoder direction as a write to the residual stream."""
    hook = sae_hook_name(sae, hook)
    W_dec = sae.W_dec.detach().float()
    if hook.endswith("mlp.hook_post"):
        return W_dec @ model.blocks[int(hook.split(".")[1])].mlp.W_out.detach()
    if W_dec.shape[1] != model.cfg.d_model:
        raise ConfigError(f"logit effects: {hook} is not in the residual basis (d_in {W_dec.shape[1]}); "
                          "use an SAE on mlp.hook_post, hook_mlp_out or hook_resid_*")
    return W_dec


@torch.no_grad()
def logit_effects(model, sae, features: Sequence[int], k: int = 10,
                  hook: str | None = None) -> dict[int, tuple[list[tuple[str, float]], list[tuple[str, float]]]]:
    """``{feature: (promoted, suppressed)}``: the ``k`` tokens each decoder direction raises / lowers most via ``W_U``."""
    direction = decoder_to_residual(model, sae, hook)[list(features)]
    effects = direction @ model.W_U.detach()
    out = {}
    for row, f in zip(effects, features):
        top, bottom = torch.topk(row, k), torch.topk(-row, k)
        out[int(f)] = ([(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)],
                       [(model.tokenizer.decode([int(i)]), -float(v)) for v, i in zip(bottom.values, bottom.indices)])
    return out


@torch.no_grad()
def ablation_effects(model, sae, tokens: Tensor, mask: Tensor, features: Sequence[int]) -> dict[int, float]:
    """``{feature: mean next-token loss change}`` when the feature alone is ablated (error term kept)."""
    import torch.nn.functional as F

    from tinyinterp.sae.features import run_with_sae

    valid = mask[:, 1:]
    targets = tokens[:, 1:]

    def loss(logits: Tensor) -> Tensor:
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), reduction="none")
        return ce[valid.flatten()].mean()

    base = loss(run_with_sae(model, sae, tokens, ablate=[]))
    return {int(f): float(loss(run_with_sae(model, sae, tokens, ablate=[int(f)])) - base) for f in features}


def encode_texts(model, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """(tokens ``[n, pos]`` right-padded, mask) for texts, each prefixed with ``<|endoftext|>`` and cut to ``n_ctx``."""
    if not texts:
        raise ConfigError("texts: give at least one text to find top activations in")
    bos = model.tokenizer.bos_token_id
    ids = [[bos, *model.tokenizer(t, add_special_tokens=False)["input_ids"]][: model.cfg.n_ctx] for t in texts]
    width = max(map(len, ids))
    tokens = torch.full((len(ids), width), bos, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.bool)
    for i, row in enumerate(ids):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    return tokens, mask


@torch.no_grad()
def feature_dashboards(model, sae, texts: Sequence[str], features: Sequence[int] | None = None, n_examples: int = 10,
                       window: int = 8, bins: int = 30, n_logits: int = 10, batch_size: int = 16,
                       ablation: bool = False) -> list[FeatureDashboard]:
    """Dashboards for ``features`` (default: all) of ``sae`` on ``texts``.

    ``ablation=True`` also measures each feature's ablation effect on the texts' next-token loss
    (one forward pass per feature: meant for a handful of features).
    """
    feats = list(range(sae.cfg.d_sae)) if features is None else [int(f) for f in features]
    bad = [f for f in feats if not 0 <= f < sae.cfg.d_sae]
    if bad:
        raise ConfigError(f"features: {bad[:5]} out of range; this SAE has features 0..{sae.cfg.d_sae - 1}")
    tokens, mask = encode_texts(model, texts)
    acts = feature_activations(model, sae, tokens, batch_size=batch_size)[..., feats]  # [text, pos, feature]
    acts = acts.masked_fill(~mask[..., None], 0.0)
    flat = acts.flatten(0, 1)  # [text*pos, feature]
    n_tokens = int(mask.sum())
    top = torch.topk(flat, min(n_examples, flat.shape[0]), dim=0)
    effects = logit_effects(model, sae, feats, n_logits)
    ablated = ablation_effects(model, sae, tokens, mask, feats) if ablation else {}
    strings = [[model.tokenizer.decode([int(t)]) for t in row] for row in tokens]
    width = tokens.shape[1]
    out = []
    for j, f in enumerate(feats):
        col = flat[:, j]
        nz = col[col > 0].numpy()
        counts, edges = np.histogram(nz, bins=bins) if nz.size else (np.zeros(bins, int), np.zeros(bins + 1))
        board = FeatureDashboard(f, frac_active=float(nz.size / max(1, n_tokens)), max_activation=float(col.max()),
                                 hist_counts=counts.tolist(), hist_edges=[float(e) for e in edges],
                                 promoted=effects[f][0], suppressed=effects[f][1], ablation_loss_delta=ablated.get(f))
        for v, idx in zip(top.values[:, j], top.indices[:, j]):
            if v <= 0:
                break
            t, pos = divmod(int(idx), width)
            lo, hi = max(0, pos - window), min(int(mask[t].sum()), pos + window + 1)
            board.examples.append(FeatureExample(t, pos, float(v), strings[t][lo:hi],
                                                 [float(a) for a in acts[t, lo:hi, j]], pos - lo))
        out.append(board)
    return out
