"""Computations the pages run on the loaded model (no Streamlit): tags, patterns, activations."""

from __future__ import annotations

import numpy as np


def tag_stories(model, stories: list[str], use_cache: bool = True):
    """A ``TaggedCorpus`` of story texts for ``model`` (cut to its context)."""
    import tinyinterp

    return tinyinterp.corpus_from_texts(stories, model, use_cache=use_cache, progress=False)


def tag_text(model, text: str) -> tuple[list[str], list[str]]:
    """Model tokens of ``text`` (BOS first, cut to the context) and the UPOS tag of each."""
    story = tag_stories(model, [text], use_cache=False).stories[0]
    tokens = [model.tokenizer.decode([int(t)]) for t in story.tokens]
    return tokens, list(story.upos)


def attention_pattern(model, text: str, layer: int, head: int) -> tuple[list[str], np.ndarray]:
    """Token strings and the [query, key] attention pattern of one head on ``text``."""
    import tinyinterp

    name = f"blocks.{layer}.attn.hook_pattern"
    strs, acts = tinyinterp.run_text(model, text, [name])
    return strs, acts[name][head].numpy()


def layer_activations(model, corpus, layer: int, max_stories: int = 60) -> tuple[np.ndarray, list[str]]:
    """MLP activations [token, d_mlp] of ``layer`` on the first stories of a ``TaggedCorpus``.

    Like the neuron analysis, only word-initial tokens count (no BOS, whitespace or word
    continuations); returns the activations (float32) and each token's UPOS tag.
    """
    import tinyinterp

    name, labels = f"blocks.{layer}.mlp.hook_post", tinyinterp.label_corpus(corpus)
    feats, tag_ids, _ = tinyinterp.token_activations(model, corpus, [name], np.arange(min(max_stories, len(corpus))),
                                                     labels=labels)
    return feats[name].reshape(-1, int(model.cfg.d_mlp)), [labels.tags[t] for t in tag_ids.tolist()]
