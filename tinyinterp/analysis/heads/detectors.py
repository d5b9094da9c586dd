"""TransformerLens's own head detectors, as a cross-check of the head scores."""

from __future__ import annotations

import numpy as np
import torch

from tinyinterp.analysis.corpus.store import TaggedStory


def detector_scores(model, stories: list[TaggedStory], exclude_bos: bool, exclude_current_token: bool) -> dict[str, np.ndarray]:
    """TransformerLens ``detect_head`` scores ([L, H] each), averaged over ``stories``.

    ``detect_head`` re-tokenises the text, so each story is cut to fewer than ``n_ctx``
    tokens (its limit) and skipped if re-tokenising does not give the same length. It is
    given a fresh copy of the cache for every head type, because its ``exclude_*``
    options zero entries of the cache it is handed in some TransformerLens versions.
    """
    from transformer_lens import ActivationCache
    from transformer_lens.head_detector import detect_head

    names = ("previous_token_head", "duplicate_token_head", "induction_head")
    sums = {k: np.zeros((model.cfg.n_layers, model.cfg.n_heads)) for k in names}
    used = 0
    for s in stories:
        m = min(len(s), model.cfg.n_ctx - 1)
        if m < 2:
            continue
        text = s.text[: int(s.offsets[m - 1, 1])]
        toks = model.to_tokens(text)
        if toks.shape[-1] != m:
            continue
        with torch.inference_mode():
            _, cache = model.run_with_cache(toks, remove_batch_dim=True,
                                            names_filter=lambda name: name.endswith("attn.hook_pattern"))
        for k in names:
            copy = ActivationCache({key: v.clone() for key, v in cache.items()}, model)
            sums[k] += detect_head(model, text, k, cache=copy, exclude_bos=exclude_bos,
                                   exclude_current_token=exclude_current_token).cpu().numpy()
        used += 1
    return {k: v / used for k, v in sums.items()} if used else {}
