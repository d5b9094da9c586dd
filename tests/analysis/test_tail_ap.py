"""Streaming AP with an exact top tail matches scikit-learn at 0.5% prevalence; plain bins do not."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from tinyinterp.analysis.neurons.tail_ap import TailHistogram


def _data(n=200_000, prevalence=0.005, seed=0):
    rng = np.random.default_rng(seed)
    tags = (rng.random(n) < prevalence).astype(np.int64)  # tag 1: rare
    x = np.stack([rng.normal(size=n) + 3.0 * tags,  # separates well: positives in the top bin
                  rng.normal(size=n) + 1.0 * tags,  # weak unit
                  np.round(rng.normal(size=n), 1)])  # heavy ties, no signal
    edges = np.quantile(x[:, :20_000], np.linspace(0, 1, 65)[1:-1], axis=1).T  # calibration sample
    return x, tags, edges


def _stream(x, tags, edges, tail, parts=8):
    hists = []
    for idx in np.array_split(np.arange(x.shape[1]), parts):
        h = TailHistogram(edges, 2, tail)
        for b in np.array_split(idx, 5):
            h.update(x[:, b], tags[b])
        hists.append(h)
    out = hists[0]
    for h in hists[1:]:
        out = out.merge(h)  # shards merge
    return out.average_precision()


def test_tail_ap_is_right_at_half_percent_prevalence():
    x, tags, edges = _data()
    exact = np.array([average_precision_score(tags == 1, x[u]) for u in range(3)])
    got = _stream(x, tags, edges, tail=4096)[:, 1]
    assert got == pytest.approx(exact, abs=0.005)
    binned = _stream(x, tags, edges, tail=1)[:, 1]  # (almost) bins only: the old estimator
    assert abs(binned[0] - exact[0]) > 0.05  # the error the tail removes
    common = np.array([average_precision_score(tags == 0, x[u]) for u in range(3)])
    assert _stream(x, tags, edges, tail=4096)[:, 0] == pytest.approx(common, abs=0.005)


def test_tail_ap_is_exact_when_everything_fits_in_the_tail():
    x, tags, edges = _data(n=3000, prevalence=0.05, seed=1)
    got = _stream(x, tags, edges, tail=5000, parts=3)
    for u in range(3):
        assert got[u, 1] == pytest.approx(average_precision_score(tags == 1, x[u]), abs=1e-12)
