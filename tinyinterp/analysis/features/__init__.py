"""Sparse-autoencoder features through the neuron pipeline's decision rules.

``units`` (feature activations as :class:`~tinyinterp.analysis.neurons.units.UnitActivations`,
the error-term ablation hook) → ``find`` (:func:`find_pos_features`: identity rules, lexical
baselines, story-bootstrap CIs, ablation) → ``compare`` (best neuron vs best feature per tag) →
``results`` (:class:`FeatureResults`, ``save(folder)`` / ``load(folder)``).
"""

from tinyinterp.analysis.features.find import FeatureConfig, find_pos_features
from tinyinterp.analysis.features.results import FeatureResults

__all__ = ["FeatureConfig", "FeatureResults", "find_pos_features"]
