"""tinyinterp: train tiny TinyStories language models and read their heads and neurons.

Quick tour::

    import tinyinterp
    model = tinyinterp.load_model("checkpoints/ts-1l")           # a HookedTransformer
    print(tinyinterp.generate_text(model, "Once upon a time"))
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

from tinyinterp.checkpoint import load_fast_model, load_model, save_checkpoint  # noqa: E402
from tinyinterp.data.readers import load_stories  # noqa: E402
from tinyinterp.errors import CheckpointError, ConfigError, DataError, TinyInterpError  # noqa: E402
from tinyinterp.evaluate import EvalResult, evaluate_checkpoint  # noqa: E402
from tinyinterp.train import TrainConfig, train  # noqa: E402


def generate_text(model, prompt: str, max_new_tokens: int = 60, temperature: float = 0.0, seed: int = 0) -> str:
    """Continue ``prompt`` with a loaded ``HookedTransformer`` (greedy by default)."""
    from tinyinterp.generate import generate

    return generate(model, model.tokenizer, prompt, model.cfg.n_ctx, max_new_tokens, temperature, seed=seed,
                    device=model.cfg.device)


logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "__version__", "load_model", "load_fast_model", "save_checkpoint", "load_stories", "evaluate_checkpoint",
    "EvalResult", "TrainConfig", "train", "generate_text",
    "TinyInterpError", "CheckpointError", "ConfigError", "DataError",
]
