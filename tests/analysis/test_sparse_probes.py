"""Planted signal: a tag spread over 4 weak units needs k >= 4; a tag carried by one unit needs k = 1."""

import numpy as np

from tinyinterp.analysis.probes.sparse import sparse_curve, unit_aurocs


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    x = rng.normal(size=(n, 40))
    x[:, 3] += 0.9 * y      # four units each carry a weak share of the tag ...
    x[:, 11] += 0.9 * y
    x[:, 20] -= 0.9 * y     # (one with the opposite sign)
    x[:, 33] += 0.9 * y
    return x, y


def test_distributed_tag_needs_several_units():
    (x_tr, y_tr), (x_te, y_te) = _data(4000, 0), _data(4000, 1)
    curve = {r["k"]: r for r in sparse_curve(x_tr, y_tr, x_te, y_te, ks=(1, 2, 4, 8))}
    assert set(curve) == {1, 2, 4, 8, 40}
    assert 0.66 < curve[1]["auroc"] < 0.8          # the best single unit is weak ...
    assert curve[4]["auroc"] > 0.88                 # ... four together are strong
    assert set(curve[4]["units"]) == {3, 11, 20, 33}  # and they are the planted ones
    assert curve[40]["auroc"] > 0.85 and curve[4]["auroc"] > curve[2]["auroc"] > curve[1]["auroc"]


def test_single_unit_tag_is_found_at_k1():
    (x_tr, y_tr), (x_te, y_te) = _data(3000, 2), _data(3000, 3)
    x_tr[:, 7] = y_tr + 0.05 * np.random.default_rng(4).normal(size=len(y_tr))
    x_te[:, 7] = y_te + 0.05 * np.random.default_rng(5).normal(size=len(y_te))
    curve = sparse_curve(x_tr, y_tr, x_te, y_te, ks=(1,))
    assert curve[0]["k"] == 1 and curve[0]["units"] == [7] and curve[0]["auroc"] > 0.99


def test_unit_aurocs_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    x, y = _data(500, 6)
    a = unit_aurocs(x, y)
    assert np.allclose(a, [roc_auc_score(y, x[:, j]) for j in range(x.shape[1])])
