"""Evaluation: next-token loss (nats/token) and bits per byte on a corpus.

Bits per byte = total next-token loss in nats / ln 2 / UTF-8 bytes of the predicted text.
It compares models with different tokenizers. Conventions (kept identical everywhere):

* each story is ``<|endoftext|>`` + its tokens, stories concatenated into one stream;
* the stream is cut into non-overlapping windows of ``n_ctx + 1`` tokens (stride ``n_ctx``),
  so every token after the first is predicted exactly once;
* bytes are those of the predicted tokens' text; a predicted ``<|endoftext|>`` costs its
  loss but adds 0 bytes (so bits per byte is, if anything, slightly pessimistic).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tinyinterp.data.batches import eval_windows


@dataclass
class EvalResult:
    loss: float  # mean nats per predicted token
    bits_per_byte: float
    tokens: int  # predicted tokens
    bytes: int
    stories: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_windows(
    forward: Callable[[torch.Tensor], torch.Tensor],
    windows: torch.Tensor,
    byte_lengths: np.ndarray,
    batch_size: int = 16,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> EvalResult:
    """Loss and bits per byte of ``forward`` (tokens → logits) over ``[n, n_ctx + 1]`` windows."""
    total_nats, total_tokens, total_bytes = 0.0, 0, 0
    table = torch.from_numpy(byte_lengths)
    it = range(0, len(windows), batch_size)
    for i in tqdm(it, desc="evaluating", unit=" batch", disable=not progress, leave=False):
        w = windows[i : i + batch_size]
        inputs, targets = w[:, :-1].clamp(min=0).to(device), w[:, 1:]
        logits = forward(inputs).float().cpu()
        total_nats += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1, reduction="sum").item()
        valid = targets[targets >= 0]
        total_tokens += int(valid.numel())
        total_bytes += int(table[valid].sum())
    loss = total_nats / max(1, total_tokens)
    bpb = total_nats / math.log(2) / max(1, total_bytes)
    return EvalResult(loss=loss, bits_per_byte=bpb, tokens=total_tokens, bytes=total_bytes)


def stories_to_stream(tokenizer, stories: Iterable[str], batch: int = 512) -> np.ndarray:
    """``<|endoftext|>`` story ``<|endoftext|>`` story … as one int64 array."""
    from tinyinterp.data.token_shards import BATCH_CHARS

    eot = tokenizer.bos_token_id
    pieces: list[np.ndarray] = []
    buf: list[str] = []

    def flush():
        for ids in tokenizer(buf, add_special_tokens=False)["input_ids"]:
            pieces.append(np.asarray([eot, *ids], dtype=np.int64))
        buf.clear()

    n_chars = 0
    for s in stories:
        buf.append(s)
        n_chars += len(s)
        if len(buf) >= batch or n_chars >= BATCH_CHARS:  # bounded memory for one enormous story
            flush()
            n_chars = 0
    if buf:
        flush()
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def corpus_stream(tokenizer, data, max_stories: int | None = None) -> tuple[np.ndarray, int]:
    """(:func:`stories_to_stream` of the first ``max_stories`` stories of ``data``, number of stories).

    Streamed: the texts are never held together, only their token ids. No story at all raises
    the readers' "no stories found" error, naming the sources.
    """
    from itertools import islice

    from tinyinterp.data.readers import iter_stories, load_stories

    count = 0

    def stories():
        nonlocal count
        for story in islice(iter_stories(data), max_stories):
            count += 1
            yield story

    stream = stories_to_stream(tokenizer, stories())
    if count == 0:
        load_stories(data, max_stories=1)
    return stream, count


def evaluate_checkpoint(path, data, batch_size: int = 16, max_stories: int | None = None,
                        progress: bool = True, device: str = "cpu", verify: bool = True) -> EvalResult:
    """Evaluate a checkpoint folder on corpus ``data`` (files, folders, globs, ``hf:`` names)."""
    from tinyinterp.checkpoint import load_fast_model
    from tinyinterp.data.tokenizer import token_byte_lengths

    model, tokenizer = load_fast_model(path, device=device, verify=verify)
    stream, count = corpus_stream(tokenizer, data, max_stories)
    windows = eval_windows([stream], model.cfg["n_ctx"])
    res = evaluate_windows(model, windows, token_byte_lengths(tokenizer), batch_size=batch_size, progress=progress, device=device)
    res.stories = count
    return res
