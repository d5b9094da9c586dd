"""Controls and evidence for neurons: untrained twin, logit effect, max-activating examples.

* :func:`untrained_copy` — same architecture and tokenizer, fresh random init (fixed seed).
* :func:`logit_effects` — direct logit effect ``W_out[n] @ W_U`` (ignores the final LayerNorm's
  scaling and any later layers): top promoted / suppressed token ids, decoded when possible.
* :func:`max_activating_examples` — a neuron's top activations with the activations of the
  surrounding tokens.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch

from tinyinterp.analysis.corpus.store import TaggedCorpus
from tinyinterp.analysis.engine import mlp_hook, stream_activations
from tinyinterp.analysis.neurons.topk import TopKBuffer
from tinyinterp.errors import ConfigError



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


def top_from_kept(ua, pos: np.ndarray, units: list[int], k: int) -> TopKBuffer:
    """A :class:`TopKBuffer` over every unit of ``ua`` holding, for ``units`` only, what the streaming pass's
    buffer holds: the ``k`` largest held-out activations, ties broken by (story, position). ``pos``: each
    token's position in its story."""
    top = TopKBuffer(ua.n_units, k)
    held = ~ua.selection
    if units and held.any():
        idx = np.flatnonzero(held)
        rows = slice(int(idx[0]), int(idx[-1]) + 1) if idx[-1] - idx[0] + 1 == len(idx) else idx
        x = ua.acts[np.ix_(idx, units)] if isinstance(rows, np.ndarray) else ua.acts[rows][:, units]
        sub = TopKBuffer(len(units), k)
        sub.update_units(torch.from_numpy(np.ascontiguousarray(x.T, dtype=np.float32)),
                         torch.from_numpy(np.asarray(ua.story[held], dtype=np.int64)),
                         torch.from_numpy(np.asarray(pos[held], dtype=np.int64)))
        u = torch.as_tensor(units)
        top.values[u], top.story[u], top.pos[u] = sub.values, sub.story, sub.pos
    return top


def example_neurons(res, max_neurons: int) -> list[tuple[int, int]]:
    """``(layer, neuron)`` of the first ``max_neurons`` distinct neurons of the (sorted) rows: who gets examples."""
    chosen: list[tuple[int, int]] = []
    for r in res.rows:  # rows are sorted: selective first, then by held-out AUROC
        key = (r["layer"], r["neuron"])
        if key not in chosen:
            chosen.append(key)
        if len(chosen) >= max_neurons:
            break
    return chosen


def examples_for(model, corpus: TaggedCorpus, res, top: TopKBuffer, layers: list[int], cfg) -> dict[str, list[dict[str, Any]]]:
    """Max-activating held-out examples for the leading neurons of a :class:`NeuronResults`."""
    chosen = example_neurons(res, cfg.max_example_neurons)
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
