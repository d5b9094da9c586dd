"""tinyinterp: train tiny TinyStories language models and read their heads and neurons.

Quick tour::

    import tinyinterp
    model = tinyinterp.load_model("checkpoints/ts-1l")           # a HookedTransformer
    print(tinyinterp.generate_text(model, "Once upon a time"))
"""

from __future__ import annotations

import logging

from tinyinterp._version import __version__  # noqa: E402
from tinyinterp.checkpoint import load_fast_model, load_model, save_checkpoint  # noqa: E402
from tinyinterp.data.readers import load_stories  # noqa: E402
from tinyinterp.errors import CheckpointError, ConfigError, DataError, TinyInterpError  # noqa: E402
from tinyinterp.evaluate import EvalResult, evaluate_checkpoint  # noqa: E402
from tinyinterp.training import TrainConfig, train  # noqa: E402


def generate_text(model, prompt: str, max_new_tokens: int = 60, temperature: float = 0.0, seed: int = 0,
                  tokenizer=None) -> str:
    """Continue ``prompt`` (greedy by default) with a loaded ``HookedTransformer``, or with the fast
    model of :func:`load_fast_model` (then pass the tokenizer it returned)."""
    from tinyinterp.generate import generate

    if isinstance(model.cfg, dict):  # the fast TinyTransformer
        if tokenizer is None:
            raise ConfigError("generate_text with the fast model needs tokenizer=, the second value of load_fast_model")
        return generate(model, tokenizer, prompt, model.cfg["n_ctx"], max_new_tokens, temperature, seed=seed,
                        device=next(model.parameters()).device)
    return generate(model, tokenizer or model.tokenizer, prompt, model.cfg.n_ctx, max_new_tokens, temperature, seed=seed,
                    device=model.cfg.device)


logging.getLogger(__name__).addHandler(logging.NullHandler())

# Analysis names load lazily, so `import tinyinterp` does not import spaCy or scikit-learn.
_LAZY = {
    "load_corpus": "tinyinterp.analysis.corpus.loading",
    "corpus_from_texts": "tinyinterp.analysis.corpus.loading",
    "classify_heads": "tinyinterp.analysis.heads.classify",
    "HeadConfig": "tinyinterp.analysis.heads.classify",
    "HeadResults": "tinyinterp.analysis.heads.results",
    "find_pos_neurons": "tinyinterp.analysis.neurons.selection",
    "identity_report": "tinyinterp.analysis.neurons.identity_report",
    "IdentityConfig": "tinyinterp.analysis.neurons.identity",
    "UnitActivations": "tinyinterp.analysis.neurons.units",
    "NeuronConfig": "tinyinterp.analysis.neurons.config",
    "NeuronResults": "tinyinterp.analysis.neurons.results",
    "neuron_ablation": "tinyinterp.analysis.neurons.matched_ablation",
    "ablation_table": "tinyinterp.analysis.neurons.matched_ablation",
    "AblationConfig": "tinyinterp.analysis.neurons.matched_ablation",
    "SelectionStats": "tinyinterp.analysis.neurons.matched_ablation",
    "selection_stats": "tinyinterp.analysis.neurons.matched_ablation",
    "max_activating_examples": "tinyinterp.analysis.neurons.controls",
    "probe_layers": "tinyinterp.analysis.probes.dense",
    "ProbeConfig": "tinyinterp.analysis.probes.dense",
    "ProbeResults": "tinyinterp.analysis.probes.dense",
    "sparse_probe_curve": "tinyinterp.analysis.probes.sparse",
    "SparseProbeResults": "tinyinterp.analysis.probes.sparse",
    "AblationResults": "tinyinterp.analysis.neurons.matched_ablation",
    "label_corpus": "tinyinterp.analysis.corpus.labels",
    "token_activations": "tinyinterp.analysis.probes.dense",
    "run_text": "tinyinterp.analysis.engine",
    "analyze": "tinyinterp.analysis.pipeline",
    "AnalysisConfig": "tinyinterp.analysis.pipeline",
    "check_complete": "tinyinterp.analysis.results_io",
    "train_sae": "tinyinterp.sae.train",
    "SAETrainConfig": "tinyinterp.sae.config",
    "load_sae": "tinyinterp.sae.load",
    "evaluate_sae": "tinyinterp.sae.quality",
    "SAEQuality": "tinyinterp.sae.quality",
    "feature_activations": "tinyinterp.sae.features",
    "run_with_sae": "tinyinterp.sae.features",
    "feature_dashboards": "tinyinterp.sae.dashboard",
    "find_pos_features": "tinyinterp.analysis.features.find",
    "FeatureConfig": "tinyinterp.analysis.features.find",
    "FeatureResults": "tinyinterp.analysis.features.results",
    "plot_attention": "tinyinterp.plots",
    "plot_head_grid": "tinyinterp.plots",
    "plot_head_scatter": "tinyinterp.plots",
    "plot_offset_profile": "tinyinterp.plots",
    "plot_neuron_selectivity": "tinyinterp.plots",
    "plot_text_activations": "tinyinterp.plots",
    "text_activation_html": "tinyinterp.plots",
    "plot_probe_accuracy": "tinyinterp.plots",
    "LABEL_COLORS": "tinyinterp.plots",
    # for the explorer (apps/explorer uses only names exported here)
    "cache_dir": "tinyinterp.cache",
    "write_text": "tinyinterp.atomic",
    "hooked_config_from_hf": "tinyinterp.models.hf_import",
    "plot_head_effects": "tinyinterp.plots",
    "plot_head_axes": "tinyinterp.plots",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tinyinterp' has no attribute {name!r}")

__all__ = [
    "__version__", "load_model", "load_fast_model", "save_checkpoint", "load_stories", "evaluate_checkpoint",
    "EvalResult", "TrainConfig", "train", "generate_text",
    "TinyInterpError", "CheckpointError", "ConfigError", "DataError", *_LAZY,
]
