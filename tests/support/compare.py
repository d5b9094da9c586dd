"""Comparing analysis outputs: equal up to float summation order."""

from __future__ import annotations

import math

import pytest

# target / off-target ratios of random sets whose target change is ~0: ratios of noise, which a float-order
# change in the ablation means moves by up to ~1% (120 random sets per tag make some such set likely)
ILL_CONDITIONED = (".random_ratio[",)


def assert_close(a, b, path: str = "", rel: float = 1e-4, abs: float = 1e-6) -> None:
    """Recursive equality of JSON-like values: floats to ``rel``/``abs`` (float32 batch sums: batch
    composition, padding and thread count change the summation order), everything else exactly."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, sorted(set(a) ^ set(b)) if isinstance(b, dict) else b)
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}", rel, abs)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]", rel, abs)
    elif isinstance(a, float) and isinstance(b, float):
        if any(k in path for k in ILL_CONDITIONED):
            rel, abs = max(rel, 0.05), max(abs, 1e-4)
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=rel, abs=abs), (path, a, b)
    else:
        assert a == b, (path, a, b)
