"""Token windows for SAE training and evaluation, built with the project's readers and tokenizer.

Stories are read with :func:`tinyinterp.data.readers.iter_stories`, joined as
``<|endoftext|>`` story ``<|endoftext|>`` story … (the stream the models were trained on,
see :func:`tinyinterp.evaluate.stories_to_stream`) and cut into full, non-overlapping
windows of ``context_size`` tokens. The last partial window is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Int
from torch import Tensor

from tinyinterp.data.readers import resolve_sources
from tinyinterp.errors import DataError
from tinyinterp.evaluate import corpus_stream


@dataclass
class TokenWindows:
    tokens: Int[Tensor, "window pos"]
    sources: list[dict]  # readers.Source.to_json() of every file read (path, sha256, bytes)
    stories: int

    def provenance(self) -> dict:
        return {"sources": self.sources, "stories": self.stories, "windows": int(self.tokens.shape[0]),
                "tokens": int(self.tokens.numel())}


def token_windows(tokenizer, data: str | Iterable[str], context_size: int, max_stories: int | None = None,
                  shuffle_seed: int | None = None) -> TokenWindows:
    """``[n, context_size]`` windows of the token stream of ``data`` (files, folders, globs, ``hf:`` names).

    ``shuffle_seed`` permutes the windows (deterministically); ``None`` keeps corpus order.
    """
    sources = resolve_sources(data)
    stream, count = corpus_stream(tokenizer, [s.path for s in sources], max_stories)
    n = len(stream) // context_size
    if n == 0:
        raise DataError(f"{', '.join(s.path for s in sources)}: {len(stream)} tokens, fewer than one window of "
                        f"{context_size}; give more text")
    windows = rearrange(torch.from_numpy(stream[: n * context_size]), "(n pos) -> n pos", pos=context_size)
    if shuffle_seed is not None:
        windows = windows[torch.from_numpy(np.random.default_rng(shuffle_seed).permutation(n))]
    return TokenWindows(windows.contiguous(), [s.to_json() for s in sources], count)


def given_windows(tokens: Tensor, context_size: int, d_vocab: int) -> TokenWindows:
    """Wrap token windows the caller prepared (checked: int ``[n, >= context_size]``, ids < ``d_vocab``)."""
    import hashlib

    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype.is_floating_point:
        raise DataError("tokens: expected an integer tensor [windows, positions]")
    if tokens.shape[1] < context_size or len(tokens) == 0:
        raise DataError(f"tokens: shape {tuple(tokens.shape)}; need at least one window of {context_size} positions")
    if int(tokens.min()) < 0 or int(tokens.max()) >= d_vocab:
        raise DataError(f"tokens: ids must be in [0, {d_vocab}) (the model's d_vocab)")
    tokens = tokens[:, :context_size].long().contiguous()
    digest = hashlib.sha256(tokens.numpy().tobytes()).hexdigest()
    return TokenWindows(tokens, [{"path": "<tokens given in memory>", "kind": "tokens", "sha256": digest,
                                  "bytes": tokens.numel() * 8}], 0)
