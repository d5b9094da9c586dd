"""Linear probes for part of speech.

* :mod:`~tinyinterp.analysis.probes.dense` — :func:`probe_layers`: a probe per site (embedding,
  residual stream, MLP), with the control-task selectivity;
* :mod:`~tinyinterp.analysis.probes.sparse` — :func:`sparse_probe_curve`: how many MLP neurons a
  probe needs to read a tag.
"""

from tinyinterp.analysis.probes.dense import ProbeConfig, ProbeResults, collect_features, probe_layers
from tinyinterp.analysis.probes.sparse import sparse_probe_curve

__all__ = ["ProbeConfig", "ProbeResults", "collect_features", "probe_layers", "sparse_probe_curve"]
