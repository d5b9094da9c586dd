"""MLP neurons: part-of-speech selectivity beyond token identity, held out, with baselines and a causal check.

* :mod:`~tinyinterp.analysis.neurons.config` — :class:`NeuronConfig` (streaming) with its :class:`IdentityConfig` (the decision);
* :mod:`~tinyinterp.analysis.neurons.stats` — streaming unit × tag statistics (binned AUROC, moments);
* :mod:`~tinyinterp.analysis.neurons.tail_ap` — streaming AP with an exact top tail;
* :mod:`~tinyinterp.analysis.neurons.topk` — :class:`TopKBuffer`, the max-activating tokens;
* :mod:`~tinyinterp.analysis.neurons.units` — :class:`UnitActivations`, in-memory activations with their labels;
* :mod:`~tinyinterp.analysis.neurons.identity` — the categories ``pos`` / ``token`` / ``untestable``;
* :mod:`~tinyinterp.analysis.neurons.baselines` — token-id lookup and embedding baselines, probe scorers;
* :mod:`~tinyinterp.analysis.neurons.id_scores` — the baselines' metrics per token id (exact, without ranking every token);
* :mod:`~tinyinterp.analysis.neurons.decision` — rows and counts (exact or streaming);
* :mod:`~tinyinterp.analysis.neurons.job` — :class:`NeuronJob`, the analysis as a pass consumer;
* :mod:`~tinyinterp.analysis.neurons.selection` — :func:`find_pos_neurons`, the entry point;
* :mod:`~tinyinterp.analysis.neurons.controls` — untrained twin, logit effects, max-activating examples;
* :mod:`~tinyinterp.analysis.neurons.matched_ablation` — selection-half choice, held-out ablation, matched random sets;
* :mod:`~tinyinterp.analysis.neurons.results` — :class:`NeuronResults` (save/load).
"""

from tinyinterp.analysis.neurons.config import NeuronConfig
from tinyinterp.analysis.neurons.controls import logit_effects, max_activating_examples, untrained_copy
from tinyinterp.analysis.neurons.identity import IdentityConfig
from tinyinterp.analysis.neurons.job import NeuronJob
from tinyinterp.analysis.neurons.matched_ablation import (AblationConfig, AblationResults, SelectionStats, ablation_table,
                                                          neuron_ablation, selection_stats)
from tinyinterp.analysis.neurons.results import NeuronResults
from tinyinterp.analysis.neurons.selection import find_pos_neurons
from tinyinterp.analysis.neurons.topk import TopKBuffer

__all__ = ["AblationConfig", "AblationResults", "IdentityConfig", "NeuronConfig", "NeuronJob", "NeuronResults",
           "SelectionStats", "TopKBuffer", "ablation_table", "find_pos_neurons", "logit_effects", "max_activating_examples",
           "neuron_ablation", "selection_stats", "untrained_copy"]
