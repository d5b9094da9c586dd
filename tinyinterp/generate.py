"""Text generation (greedy or temperature sampling with a seed) for any tokens→logits model."""

from __future__ import annotations

from typing import Callable

import torch

from tinyinterp.errors import TinyInterpError


@torch.no_grad()
def generate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    tokenizer,
    prompt: str,
    n_ctx: int,
    max_new_tokens: int = 60,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
    stop_at_eos: bool = True,
    device: str | torch.device = "cpu",
) -> str:
    """Continue ``prompt`` (prefixed with BOS); return prompt + continuation.

    ``temperature == 0`` is greedy. Sampling uses its own ``torch.Generator`` seeded with
    ``seed``, so results are reproducible and the global RNG is untouched.
    """
    check_settings(temperature, max_new_tokens, seed)
    bos = tokenizer.bos_token_id
    ids = [bos] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) > n_ctx:
        raise TinyInterpError(f"prompt is {len(ids)} tokens (with BOS) but the model's context is {n_ctx}; shorten the prompt")
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.tensor([ids], dtype=torch.long, device=device)
    n_prompt = tokens.shape[1]
    for _ in range(max_new_tokens):
        logits = forward(tokens[:, -n_ctx:])[0, -1].float().cpu()
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        if stop_at_eos and nxt == tokenizer.eos_token_id:
            break
        tokens = torch.cat([tokens, torch.tensor([[nxt]], device=device)], dim=1)
    return prompt + tokenizer.decode(tokens[0, n_prompt:].tolist())


MAX_SEED = 2**63 - 1


def check_settings(temperature: float, max_new_tokens: int, seed: int) -> None:
    """One-line errors for sampling settings no generator accepts."""
    if not temperature >= 0 or temperature == float("inf"):  # also NaN
        raise TinyInterpError(f"temperature={temperature}: must be >= 0 (0 = greedy)")
    if max_new_tokens < 0:
        raise TinyInterpError(f"max_new_tokens={max_new_tokens}: must be >= 0")
    if not 0 <= seed <= MAX_SEED:
        raise TinyInterpError(f"seed={seed}: must be in [0, 2**63)")


_CONTROL = dict.fromkeys(c for c in range(32) if chr(c) not in "\n\t")


@torch.no_grad()
def sample_stories(model, n: int, prompt: str = "Once upon a time", max_new_tokens: int = 200,
                   temperature: float = 0.8, seed: int = 0, batch_size: int = 50) -> list[str]:
    """``n`` stories sampled in batches from a ``HookedTransformer`` (KV cache), cut at ``<|endoftext|>``.

    Control characters a model may emit (e.g. NUL) are removed, so the result reads back as text.
    The global RNG is restored afterwards.
    """
    from tqdm.auto import tqdm

    check_settings(temperature, max_new_tokens, seed)
    if temperature == 0:
        raise TinyInterpError("temperature=0: sampling stories needs a temperature > 0 (0 would repeat one story)")
    n_prompt = model.to_tokens(prompt).shape[1]
    if n_prompt + max_new_tokens > model.cfg.n_ctx:
        raise TinyInterpError(f"max_new_tokens={max_new_tokens}: the prompt ({n_prompt} tokens with BOS) plus the new tokens "
                              f"exceed the model's context of {model.cfg.n_ctx}; pass --max-new-tokens "
                              f"{max(0, model.cfg.n_ctx - n_prompt)} or less")
    out: list[str] = []
    eos = model.tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in tqdm(range(0, n, batch_size), desc="sampling", unit=" batch"):
            k = min(batch_size, n - start)
            tokens = model.to_tokens([prompt] * k)
            res = model.generate(tokens, max_new_tokens=max_new_tokens, temperature=temperature, stop_at_eos=True,
                                 eos_token_id=eos, use_past_kv_cache=True, verbose=False, return_type="tokens")
            for row in res[:, tokens.shape[1]:].tolist():
                if eos in row:
                    row = row[: row.index(eos)]
                text = (prompt + model.tokenizer.decode(row)).translate(_CONTROL).strip()
                if text:
                    out.append(text)
    return out
