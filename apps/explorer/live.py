"""Computations the pages run on the loaded model (no Streamlit): tags, patterns, activations."""

from __future__ import annotations

import numpy as np
import torch

SKIP_TAGS = ("BOS", "SPACE")


def tag_stories(model, stories: list[str], use_cache: bool = True):
    """A ``TaggedCorpus`` of story texts for ``model`` (cut to its context).

    Calls ``tag_corpus`` directly: ``tinyinterp.load_corpus`` first asks whether each text is
    a file path, which raises ``OSError`` (file name too long) for a long one-line story.
    """
    from tinyinterp.analysis.corpus import tag_corpus

    return tag_corpus(stories, model.tokenizer, int(model.cfg.n_ctx), use_cache=use_cache, progress=False)


def tag_text(model, text: str) -> tuple[list[str], list[str]]:
    """Model tokens of ``text`` (BOS first, cut to the context) and the UPOS tag of each."""
    story = tag_stories(model, [text], use_cache=False).stories[0]
    tokens = [model.tokenizer.decode([int(t)]) for t in story.tokens]
    return tokens, list(story.upos)


def attention_pattern(model, text: str, layer: int, head: int) -> tuple[list[str], np.ndarray]:
    """Token strings and the [query, key] attention pattern of one head on ``text``."""
    tokens = model.to_tokens(text)[:, : model.cfg.n_ctx]
    name = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=name)
    strs = [model.tokenizer.decode([t]) for t in tokens[0].tolist()]
    return strs, cache[name][0, head].cpu().numpy()


def layer_activations(model, corpus, layer: int, max_stories: int = 60) -> tuple[np.ndarray, list[str]]:
    """MLP activations [token, d_mlp] of ``layer`` on the first stories of a ``TaggedCorpus``.

    Like the neuron analysis, only word-initial tokens count (no BOS, whitespace or word
    continuations); returns the activations (float32) and each token's UPOS tag.
    """
    name = f"blocks.{layer}.mlp.hook_post"
    acts, tags = [], []
    for story in corpus.stories[:max_stories]:
        ids = torch.as_tensor(np.asarray(story.tokens[: model.cfg.n_ctx]), dtype=torch.long)[None]
        with torch.no_grad():
            _, cache = model.run_with_cache(ids, names_filter=name)
        post = cache[name][0].cpu().numpy()
        keep = [i for i in range(ids.shape[1]) if story.upos[i] not in SKIP_TAGS and not story.continuation[i]]
        acts.append(post[keep])
        tags.extend(story.upos[i] for i in keep)
    d_mlp = int(model.cfg.d_mlp)
    return (np.concatenate(acts).astype(np.float32) if acts else np.zeros((0, d_mlp), np.float32)), tags
