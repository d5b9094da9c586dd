"""Controls and evidence for neurons: untrained twin, logit effect, max-activating examples, ablation.

* :func:`untrained_copy` — same architecture and tokenizer, fresh random init (fixed seed).
* :func:`logit_effects` — direct logit effect ``W_out[n] @ W_U`` (ignores the final LayerNorm's
  scaling and any later layers): top promoted / suppressed token ids, decoded when possible.
* :func:`max_activating_examples` — a neuron's top activations with the activations of the
  surrounding tokens.
* :func:`ablation_effect` — causal check: mean-ablate a tag's neurons and measure the loss
  increase on the tokens that follow that tag, against equal-size random neuron sets.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tinyinterp.analysis.activations import TopKBuffer, _StopForward, mlp_hook, plan_batches, story_lengths, stream_activations
from tinyinterp.analysis.corpus import TaggedCorpus
from tinyinterp.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def untrained_copy(model, seed: int = 1234):
    """A randomly initialised ``HookedTransformer`` with ``model``'s config and tokenizer."""
    from transformer_lens import HookedTransformer

    cfg = copy.deepcopy(model.cfg)
    cfg.seed, cfg.init_weights = seed, True
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(seed)
        twin = HookedTransformer(cfg, tokenizer=model.tokenizer, move_to_device=False)
    if str(model.cfg.device) != "cpu":
        twin.to(model.cfg.device, print_details=False)
    return twin.eval()


def _decode(model, ids: list[int]) -> list[str] | None:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return None
    return [tok.decode([i]) for i in ids]


def logit_effects(model, neurons: Sequence[tuple[int, int]], k: int = 10) -> dict[tuple[int, int], dict[str, Any]]:
    """Per (layer, neuron): the ``k`` token ids most promoted / suppressed by ``W_out[n] @ W_U``."""
    if k == 0 or not neurons:
        return {}
    out: dict[tuple[int, int], dict[str, Any]] = {}
    W_U = model.W_U.detach()  # [d_model, d_vocab]
    k = min(k, W_U.shape[1])
    for layer in sorted({x for x, _ in neurons}):
        ns = [n for x, n in neurons if x == layer]
        eff = model.blocks[layer].mlp.W_out.detach()[ns] @ W_U  # [neuron, d_vocab]
        up, down = eff.topk(k, dim=1), (-eff).topk(k, dim=1)
        for row, n in enumerate(ns):
            pro, sup = up.indices[row].tolist(), down.indices[row].tolist()
            d: dict[str, Any] = {"promoted": pro, "suppressed": sup,
                                 "promoted_logit": [round(v, 4) for v in up.values[row].tolist()],
                                 "suppressed_logit": [round(-v, 4) for v in down.values[row].tolist()]}
            if (pt := _decode(model, pro)) is not None:
                d["promoted_text"], d["suppressed_text"] = pt, _decode(model, sup)
            out[(layer, n)] = d
    return out


def _token_texts(corpus: TaggedCorpus, story: int, lo: int, hi: int) -> list[str]:
    s = corpus.stories[story]
    return [("<bos>" if i == 0 else s.text[int(s.offsets[i, 0]):int(s.offsets[i, 1])]) for i in range(lo, hi)]


def _windows(model, corpus: TaggedCorpus, wanted: list[dict[str, Any]], window: int, batch_tokens: int) -> None:
    """Fill ``tokens``/``text``/``acts`` of each wanted example (keys layer, neuron, story, pos) in place."""
    by_story: dict[int, list[dict[str, Any]]] = {}
    for ex in wanted:
        by_story.setdefault(ex["story"], []).append(ex)
    hooks = sorted({mlp_hook(ex["layer"]) for ex in wanted})
    for bt in stream_activations(model, corpus, hooks, batch_tokens, indices=sorted(by_story), desc="examples"):
        for row, story in enumerate(bt.stories.tolist()):
            n = int(bt.mask[row].sum())
            for ex in by_story[story]:
                lo, hi = max(0, ex["pos"] - window), min(n, ex["pos"] + window + 1)
                acts = bt.acts[mlp_hook(ex["layer"])][row, lo:hi, ex["neuron"]]
                s = corpus.stories[story]
                ex.update(center=ex["pos"] - lo, tokens=s.tokens[lo:hi].tolist(), text=_token_texts(corpus, story, lo, hi),
                          acts=[round(v, 5) for v in acts.float().cpu().tolist()],
                          tag=s.upos[ex["pos"]], word=s.word[ex["pos"]])


def examples_for(model, corpus: TaggedCorpus, res, top: TopKBuffer, layers: list[int], cfg) -> dict[str, list[dict[str, Any]]]:
    """Max-activating held-out examples for the leading neurons of a :class:`NeuronResults`."""
    chosen: list[tuple[int, int]] = []
    for r in res.rows:  # rows are sorted: selective first, then by held-out AUROC
        key = (r["layer"], r["neuron"])
        if key not in chosen:
            chosen.append(key)
        if len(chosen) >= cfg.max_example_neurons:
            break
    wanted = []
    d_mlp = model.cfg.d_mlp
    for layer, neuron in chosen:
        u = layers.index(layer) * d_mlp + neuron
        for j in range(cfg.n_examples):
            if int(top.story[u, j]) >= 0:
                wanted.append({"layer": layer, "neuron": neuron, "story": int(top.story[u, j]),
                               "pos": int(top.pos[u, j]), "activation": float(top.values[u, j])})
    if wanted:
        _windows(model, corpus, wanted, cfg.example_window, cfg.batch_tokens)
    out: dict[str, list[dict[str, Any]]] = {}
    for ex in wanted:
        out.setdefault(f"{ex['layer']}.{ex['neuron']}", []).append(ex)
    return out


def max_activating_examples(model, corpus: TaggedCorpus, layer: int, neuron: int, k: int = 10, window: int = 8,
                            batch_tokens: int = 8192) -> list[dict[str, Any]]:
    """The ``k`` tokens of ``corpus`` on which a neuron fires most, with their neighbours' activations."""
    if not 0 <= layer < model.cfg.n_layers or not 0 <= neuron < model.cfg.d_mlp:
        raise ConfigError(f"neuron ({layer}, {neuron}) does not exist in this model")
    top = TopKBuffer(1, k)
    for bt in stream_activations(model, corpus, [mlp_hook(layer)], batch_tokens):
        b, p = bt.mask.nonzero(as_tuple=True)  # on the model's device
        acts = bt.acts[mlp_hook(layer)][b, p, neuron][:, None].float().cpu()  # [tok, 1]
        top.update(acts, torch.as_tensor(bt.stories)[b.cpu()], p.cpu())
    wanted = [{"layer": layer, "neuron": neuron, "story": int(s), "pos": int(p), "activation": float(v)}
              for v, s, p in zip(top.values[0].tolist(), top.story[0].tolist(), top.pos[0].tolist()) if s >= 0]
    _windows(model, corpus, wanted, window, batch_tokens)
    return wanted


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


def _ablate_hook(idx: Tensor, means: Tensor):
    def hook(act: Float[Tensor, "batch pos d_mlp"], hook) -> Tensor:
        act[..., idx] = means[idx].to(act.dtype)
        return act
    return hook


def ablation_effect(model, corpus: TaggedCorpus, neurons: Sequence[tuple[int, int]], tag: str, n_random: int = 20,
                    seed: int = 0, batch_tokens: int = 8192, max_stories: int | None = 500,
                    progress: bool = False) -> AblationResult:
    """Mean-ablate ``neurons`` and compare the loss rise after ``tag`` tokens with random neuron sets.

    Measured positions: tokens tagged ``tag`` whose next token starts a new word (so the last
    token of each ``tag`` word); the loss is that of predicting the next token. Means are taken
    over every token of the (capped) corpus. Random sets match the layer composition of
    ``neurons`` and never include them. Use held-out stories for an honest check.
    """
    neurons = [(int(x), int(n)) for x, n in neurons]
    if not neurons:
        raise ConfigError("ablation_effect needs at least one (layer, neuron)")
    if any(not 0 <= x < model.cfg.n_layers or not 0 <= n < model.cfg.d_mlp for x, n in neurons):
        raise ConfigError(f"neurons {neurons}: a (layer, neuron) is out of range for this model")
    if n_random < 0:
        raise ConfigError(f"n_random={n_random}: must be >= 0")
    idx = np.arange(len(corpus)) if max_stories is None else np.arange(min(max_stories, len(corpus)))
    n_ctx, dev = model.cfg.n_ctx, model.cfg.device
    lengths = story_lengths(corpus, n_ctx)
    batches = plan_batches(lengths, max(batch_tokens, n_ctx), idx)
    layers = sorted({x for x, _ in neurons})

    def batch_inputs(b_idx):
        n_pos = int(lengths[b_idx].max())
        tokens = torch.zeros((len(b_idx), n_pos), dtype=torch.long)
        target = torch.zeros((len(b_idx), n_pos), dtype=torch.bool)  # predict token p+1 from a tag token at p
        for row, i in enumerate(b_idx):
            s, n = corpus.stories[i], int(lengths[i])
            tokens[row, :n] = torch.as_tensor(s.tokens[:n])
            is_tag = np.asarray(s.upos[: n - 1]) == tag
            target[row, : n - 1] = torch.as_tensor(is_tag & ~np.asarray(s.continuation[1:n], dtype=bool))
        mask = torch.arange(n_pos)[None, :] < torch.as_tensor(lengths[b_idx])[:, None]
        other = mask.clone()
        other[torch.arange(len(b_idx)), torch.as_tensor(lengths[b_idx]) - 1] = False  # no next token
        return tokens.to(dev), mask.to(dev), target.to(dev), (other & ~target.cpu()).to(dev)

    # clean pass: loss per measured position, and mean activations of every neuron in ``layers``
    sums = {x: torch.zeros(model.cfg.d_mlp, dtype=torch.float64, device=dev) for x in layers}
    n_tok = 0

    def summer(layer: int, mask: Tensor):
        def hook(act, hook):
            sums[layer] += act[mask].double().sum(0)
            return act
        return hook

    def losses(fwd_hooks_for, target_only: bool = False) -> tuple[float, float, int]:
        """Mean next-token loss at the measured positions and at all other positions. With
        ``target_only`` the unembedding runs on the measured positions only (the other-position
        loss is then NaN): the forward stops at the last residual stream, about half the cost on small models."""
        tot_t = tot_o = 0.0
        n_t = n_o = 0
        last_resid = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        for b_idx in tqdm(batches, desc="ablation", disable=not progress, leave=False):
            tokens, mask, target, other = batch_inputs(b_idx)
            hooks = fwd_hooks_for(mask)
            tgt = target[:, :-1]
            if target_only:
                kept: dict[str, Tensor] = {}

                def grab(x: Tensor, hook) -> None:
                    kept["x"] = x[:, :-1][tgt]  # [n_target, d_model]: the final residual stream
                    raise _StopForward

                try:
                    with torch.inference_mode():
                        model.run_with_hooks(tokens, attention_mask=mask.long(),
                                             fwd_hooks=[*hooks, (last_resid, grab)])
                except _StopForward:
                    pass
                with torch.inference_mode():
                    logits = model.unembed(model.ln_final(kept["x"][None]))[0]  # [n_target, d_vocab]
                    lp = logits.log_softmax(-1).gather(-1, tokens[:, 1:][tgt][:, None])[:, 0]
                tot_t += float(-lp.sum())
                n_t += int(target.sum())
                continue
            with torch.inference_mode():
                logits = model.run_with_hooks(tokens, attention_mask=mask.long(), fwd_hooks=hooks)
            lp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]  # [batch, pos-1]
            tot_t += float(-lp[tgt].sum())
            tot_o += float(-lp[other[:, :-1]].sum())
            n_t += int(target.sum())
            n_o += int(other[:, :-1].sum())
        return tot_t / max(n_t, 1), (tot_o / max(n_o, 1)) if not target_only else float("nan"), n_t

    clean, clean_o, n_pos = losses(lambda m: [(mlp_hook(x), summer(x, m)) for x in layers])
    if n_pos == 0:
        raise DataError(f"no '{tag}' tokens followed by a new word in the corpus; pick another tag or more stories")
    n_tok = int(sum(lengths[i] for i in idx))
    means = {x: (sums[x] / n_tok).float() for x in layers}

    def ablated(ns: list[tuple[int, int]], target_only: bool = False) -> tuple[float, float]:
        hooks = [(mlp_hook(x), _ablate_hook(torch.tensor([n for y, n in ns if y == x], device=dev), means[x]))
                 for x in layers]
        t, o, _ = losses(lambda m: hooks, target_only)
        return t - clean, o - clean_o

    delta, delta_other = ablated(neurons)
    rng = np.random.default_rng(seed)
    randoms = []
    for _ in range(n_random):
        draw = []
        for x in layers:
            chosen = {n for y, n in neurons if y == x}
            pool = np.setdiff1d(np.arange(model.cfg.d_mlp), list(chosen))
            if len(pool) < len(chosen):
                raise ConfigError(f"layer {x} has too few other neurons to draw a random set of {len(chosen)}")
            draw += [(x, int(n)) for n in rng.choice(pool, size=len(chosen), replace=False)]
        randoms.append(ablated(draw, target_only=True)[0])
    p = (1 + sum(r >= delta for r in randoms)) / (1 + len(randoms))
    return AblationResult(tag=tag, neurons=neurons, n_positions=n_pos, clean_loss=clean, delta=delta,
                          delta_other=delta_other, random_deltas=randoms, p_value=float(p))
