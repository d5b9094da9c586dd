"""MLP neurons: part-of-speech selectivity, held out, with controls and a causal check.

* :mod:`~tinyinterp.analysis.neurons.config` — :class:`NeuronConfig`;
* :mod:`~tinyinterp.analysis.neurons.stats` — streaming unit × tag statistics and tests;
* :mod:`~tinyinterp.analysis.neurons.topk` — :class:`TopKBuffer`, the max-activating tokens;
* :mod:`~tinyinterp.analysis.neurons.job` — :class:`NeuronJob`, the analysis as a pass consumer;
* :mod:`~tinyinterp.analysis.neurons.selection` — :func:`find_pos_neurons` (the method is described there);
* :mod:`~tinyinterp.analysis.neurons.controls` — untrained twin, logit effects, max-activating examples;
* :mod:`~tinyinterp.analysis.neurons.ablation` — :func:`ablation_effect`, the causal check;
* :mod:`~tinyinterp.analysis.neurons.results` — :class:`NeuronResults` (save/load).
"""

from tinyinterp.analysis.neurons.ablation import AblationResult, AblationResults, ablation_effect
from tinyinterp.analysis.neurons.config import NeuronConfig
from tinyinterp.analysis.neurons.controls import logit_effects, max_activating_examples, untrained_copy
from tinyinterp.analysis.neurons.job import NeuronJob
from tinyinterp.analysis.neurons.results import NeuronResults
from tinyinterp.analysis.neurons.selection import find_pos_neurons
from tinyinterp.analysis.neurons.topk import TopKBuffer

__all__ = ["AblationResult", "AblationResults", "NeuronConfig", "NeuronJob", "NeuronResults", "TopKBuffer",
           "ablation_effect", "find_pos_neurons", "logit_effects", "max_activating_examples", "untrained_copy"]
