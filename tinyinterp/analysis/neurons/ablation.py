"""Causal check for neurons: mean-ablate a tag's neurons, measure the loss rise after that tag.

:func:`ablation_effect` compares the rise in next-token loss after ``tag`` tokens when the
chosen neurons are mean-ablated with the rise for equal-size random neuron sets of the same
layer composition (a permutation-style p-value). :class:`AblationResult` is one such check;
:class:`AblationResults` the checks of one analysis, saved as ``ablation.json``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.engine import StopForward, length_mask, mlp_hook, padded_tokens, plan_batches, story_lengths
from tinyinterp.analysis.results_io import read_result_json, write_result_json
from tinyinterp.errors import ConfigError, DataError

ABLATION_JSON = "ablation.json"


@dataclass
class AblationResult:
    tag: str
    neurons: list[tuple[int, int]]  # (layer, neuron) ablated
    n_positions: int  # tag tokens whose next-token loss is measured
    clean_loss: float  # mean loss on those next tokens, no ablation
    delta: float  # loss increase when ablating ``neurons``
    delta_other: float  # loss increase on all other positions (specificity)
    random_deltas: list[float]  # loss increase for each equal-size random set
    p_value: float  # (1 + #random >= delta) / (1 + n_random)

    @property
    def random_mean(self) -> float:
        return float(np.mean(self.random_deltas)) if self.random_deltas else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "random_mean": self.random_mean,
                "random_std": float(np.std(self.random_deltas)) if self.random_deltas else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AblationResult":
        nan = float("nan")
        return cls(tag=d["tag"], neurons=[(int(x), int(n)) for x, n in d["neurons"]], n_positions=int(d["n_positions"]),
                   clean_loss=nan if d["clean_loss"] is None else d["clean_loss"],
                   delta=nan if d["delta"] is None else d["delta"],
                   delta_other=nan if d["delta_other"] is None else d["delta_other"],
                   random_deltas=[nan if v is None else v for v in d["random_deltas"]],
                   p_value=nan if d["p_value"] is None else d["p_value"])


@dataclass
class AblationResults:
    """The ablation checks of one analysis (one per tag); ``save(folder)`` writes ``ablation.json``."""

    checks: list[AblationResult] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.checks)

    def __iter__(self):
        return iter(self.checks)

    def to_list(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.checks]

    def save(self, out: str | os.PathLike) -> Path:
        """Write ``ablation.json`` (a list of checks) into the folder ``out``; returns the folder."""
        out = Path(out)
        write_result_json(out / ABLATION_JSON, self.to_list())
        return out

    @classmethod
    def load(cls, out: str | os.PathLike) -> "AblationResults":
        """Read the ``ablation.json`` of a folder written by :meth:`save`."""
        data = read_result_json(Path(out) / ABLATION_JSON, "AblationResults.save(folder)")
        try:
            return cls([AblationResult.from_dict(d) for d in data])
        except (TypeError, KeyError, ValueError) as exc:
            raise DataError(f"{Path(out) / ABLATION_JSON}: not a list of ablation checks ({exc}); re-run the analysis") from None


Inputs = tuple[Tensor, Tensor, Tensor, Tensor]  # tokens, mask, measured positions, other positions; [batch, pos] each


def _inputs(model, corpus: TaggedCorpus, stories: np.ndarray, lengths: np.ndarray, tag: str) -> Inputs:
    """Padded ids and masks of one batch; ``target`` marks tag tokens at p whose next token p+1 starts a word."""
    tokens = padded_tokens(corpus, stories, lengths)
    n_pos = tokens.shape[1]
    target = torch.zeros((len(stories), n_pos), dtype=torch.bool)  # predict token p+1 from a tag token at p
    for row, i in enumerate(stories.tolist()):
        s, n = corpus.stories[i], int(lengths[i])
        is_tag = np.asarray(s.upos[: n - 1]) == tag
        target[row, : n - 1] = torch.as_tensor(is_tag & ~np.asarray(s.continuation[1:n], dtype=bool))
    mask = length_mask(lengths[stories], n_pos)
    other = mask.clone()
    other[torch.arange(len(stories)), torch.as_tensor(lengths[stories]) - 1] = False  # no next token
    dev = model.cfg.device
    return tokens.to(dev), mask.to(dev), target.to(dev), (other & ~target).to(dev)


def _batch_loss(model, inputs: Inputs, hooks: list, target_only: bool) -> tuple[float, float, int, int]:
    """Summed next-token loss and counts at the measured and the other positions of one batch. With
    ``target_only`` the unembedding runs on the measured positions only (the other-position sums are
    then 0): the forward stops at the last residual stream, about half the cost on small models."""
    tokens, mask, target, other = inputs
    tgt = target[:, :-1]
    if not target_only:
        with torch.inference_mode():
            logits = model.run_with_hooks(tokens, attention_mask=mask.long(), fwd_hooks=hooks)
        lp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]  # [batch, pos-1]
        return float(-lp[tgt].sum()), float(-lp[other[:, :-1]].sum()), int(target.sum()), int(other[:, :-1].sum())
    kept: dict[str, Tensor] = {}

    def grab(x: Tensor, hook) -> None:
        kept["x"] = x[:, :-1][tgt]  # [n_target, d_model]: the final residual stream
        raise StopForward

    try:
        with torch.inference_mode():
            model.run_with_hooks(tokens, attention_mask=mask.long(),
                                 fwd_hooks=[*hooks, (f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", grab)])
    except StopForward:
        pass
    with torch.inference_mode():
        logits = model.unembed(model.ln_final(kept["x"][None]))[0]  # [n_target, d_vocab]
        lp = logits.log_softmax(-1).gather(-1, tokens[:, 1:][tgt][:, None])[:, 0]
    return float(-lp.sum()), 0.0, int(target.sum()), 0


def _losses(model, batches: list[Inputs], hooks_for: Callable[[Tensor], list], target_only: bool,
            progress: bool) -> tuple[float, float, int]:
    """Mean next-token loss at the measured positions and at all other positions (NaN with
    ``target_only``), and the number of measured positions."""
    tot_t = tot_o = 0.0
    n_t = n_o = 0
    for inputs in tqdm(batches, desc="ablation", disable=not progress, leave=False):
        t, o, a, b = _batch_loss(model, inputs, hooks_for(inputs[1]), target_only)
        tot_t, tot_o, n_t, n_o = tot_t + t, tot_o + o, n_t + a, n_o + b
    return tot_t / max(n_t, 1), (tot_o / max(n_o, 1)) if not target_only else float("nan"), n_t


def _mean_hook(total: Tensor, mask: Tensor):
    """Adds the activations at real positions to ``total`` (for the mean activations)."""
    def hook(act, hook):
        total.add_(act[mask].double().sum(0))
        return act
    return hook


def _ablate_hook(idx: Tensor, means: Tensor):
    def hook(act: Float[Tensor, "batch pos d_mlp"], hook) -> Tensor:
        act[..., idx] = means[idx].to(act.dtype)
        return act
    return hook


def _random_set(neurons: list[tuple[int, int]], layers: list[int], d_mlp: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Neurons drawn at random with the layer composition of ``neurons``, never one of them."""
    draw = []
    for x in layers:
        chosen = {n for y, n in neurons if y == x}
        pool = np.setdiff1d(np.arange(d_mlp), list(chosen))
        if len(pool) < len(chosen):
            raise ConfigError(f"layer {x} has too few other neurons to draw a random set of {len(chosen)}")
        draw += [(x, int(n)) for n in rng.choice(pool, size=len(chosen), replace=False)]
    return draw


def _check(model, neurons: Sequence[tuple[int, int]], n_random: int) -> list[tuple[int, int]]:
    neurons = [(int(x), int(n)) for x, n in neurons]
    if not neurons:
        raise ConfigError("ablation_effect needs at least one (layer, neuron)")
    if any(not 0 <= x < model.cfg.n_layers or not 0 <= n < model.cfg.d_mlp for x, n in neurons):
        raise ConfigError(f"neurons {neurons}: a (layer, neuron) is out of range for this model")
    if n_random < 0:
        raise ConfigError(f"n_random={n_random}: must be >= 0")
    return neurons


def ablation_effect(model, corpus: TaggedCorpus, neurons: Sequence[tuple[int, int]], tag: str, n_random: int = 20,
                    seed: int = 0, batch_tokens: int = 8192, max_stories: int | None = 500,
                    progress: bool = False) -> AblationResult:
    """Mean-ablate ``neurons`` and compare the loss rise after ``tag`` tokens with random neuron sets.

    Measured positions: tokens tagged ``tag`` whose next token starts a new word (so the last
    token of each ``tag`` word); the loss is that of predicting the next token. Means are taken
    over every token of the (capped) corpus. Random sets match the layer composition of
    ``neurons`` and never include them. Use held-out stories for an honest check.
    """
    neurons = _check(model, neurons, n_random)
    idx = np.arange(len(corpus)) if max_stories is None else np.arange(min(max_stories, len(corpus)))
    n_ctx, dev, d_mlp = model.cfg.n_ctx, model.cfg.device, model.cfg.d_mlp
    lengths = story_lengths(corpus, n_ctx)
    batches = [_inputs(model, corpus, b, lengths, tag) for b in plan_batches(lengths, max(batch_tokens, n_ctx), idx)]
    layers = sorted({x for x, _ in neurons})
    # clean pass: loss per measured position, and mean activations of every neuron in ``layers``
    sums = {x: torch.zeros(d_mlp, dtype=torch.float64, device=dev) for x in layers}
    clean, clean_o, n_pos = _losses(model, batches, lambda m: [(mlp_hook(x), _mean_hook(sums[x], m)) for x in layers],
                                    False, progress)
    if n_pos == 0:
        raise DataError(f"no '{tag}' tokens followed by a new word in the corpus; pick another tag or more stories")
    n_tok = int(sum(lengths[i] for i in idx))
    means = {x: (sums[x] / n_tok).float() for x in layers}

    def ablated(ns: list[tuple[int, int]], target_only: bool = False) -> tuple[float, float]:
        hooks = [(mlp_hook(x), _ablate_hook(torch.tensor([n for y, n in ns if y == x], device=dev), means[x]))
                 for x in layers]
        t, o, _ = _losses(model, batches, lambda m: hooks, target_only, progress)
        return t - clean, o - clean_o

    delta, delta_other = ablated(neurons)
    rng = np.random.default_rng(seed)
    randoms = [ablated(_random_set(neurons, layers, d_mlp, rng), target_only=True)[0] for _ in range(n_random)]
    p = (1 + sum(r >= delta for r in randoms)) / (1 + len(randoms))
    return AblationResult(tag=tag, neurons=neurons, n_positions=n_pos, clean_loss=clean, delta=delta,
                          delta_other=delta_other, random_deltas=randoms, p_value=float(p))
