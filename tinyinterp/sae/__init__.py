"""Sparse autoencoders (SAELens) on tinyinterp checkpoints: train, load, measure, splice, inspect.

``config`` (what to train) → ``data`` (token windows from our readers) → ``train`` (SAELens'
runner on our model) → ``load`` (SAELens' on-disk format, checked against the model) →
``quality`` (L0, FVE, CE loss recovered) / ``features`` (activations, splicing hooks) →
``dashboard`` (per-feature data for the explorer).
"""
