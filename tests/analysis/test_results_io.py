"""One results convention: every result class saves into a folder and loads back; one JSON sanitiser."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.support.planted_neurons import make_corpus, random_model
from tests.support.planted_neurons import single_thread  # noqa: F401  (autouse fixture)
from tinyinterp.analysis.neurons import AblationResults, NeuronConfig
from tinyinterp.analysis.pipeline import AnalysisConfig, analyze
from tinyinterp.analysis.probes import SparseProbeResults
from tinyinterp.analysis.results_io import jsonable
from tinyinterp.errors import DataError


def test_jsonable_is_strict_json():
    obj = {"nan": math.nan, "inf": np.float32("inf"), "i": np.int64(3), "b": np.bool_(True), "t": (1, 2.5),
           "a": np.arange(3), "p": Path("x/y"), 4: None}
    out = jsonable(obj)
    assert out == {"nan": None, "inf": None, "i": 3, "b": True, "t": [1, 2.5], "a": [0, 1, 2], "p": "x/y", "4": None}
    json.dumps(out, allow_nan=False)
    assert isinstance(out["b"], bool) and isinstance(out["i"], int)


def test_ablation_and_sparse_probe_results_round_trip(tmp_path):
    checks = AblationResults([{"tag": "NOUN", "neurons": [[0, 3], [0, 7]], "delta_target": 0.4,
                               "random_delta_target": [0.1, math.nan]}])
    assert checks.save(tmp_path) == tmp_path
    back = AblationResults.load(tmp_path)
    assert back.rows[0]["neurons"] == [[0, 3], [0, 7]] and back.rows[0]["random_delta_target"][1] is None
    assert back.rows[0]["delta_target"] == 0.4
    curves = SparseProbeResults({"NOUN": {"curve": [{"k": 1, "auroc": 0.7}, {"k": 32, "auroc": 0.95}], "k_for_0.9": 32,
                                          "n_train": 10, "n_test": 10, "n_pos_test": 3}})
    curves.save(tmp_path)
    again = SparseProbeResults.load(tmp_path)
    assert again.curves == curves.curves and "NOUN" in again and again.headline()["NOUN"]["k1_auroc"] == 0.7
    (tmp_path / "ablation.json").write_text('{"not": "a list"}')
    with pytest.raises(DataError, match="ablation.json"):
        AblationResults.load(tmp_path)
    with pytest.raises(DataError, match="not found"):
        SparseProbeResults.load(tmp_path / "nowhere")


def test_analyze_leaves_the_callers_config_alone(tmp_path):
    cfg = AnalysisConfig(max_stories=None, run_heads=False, run_probes=False, report=False, ablation_tags=(),
                         neurons=NeuronConfig(untrained_control=False, n_examples=0, progress=False))
    before = repr(cfg)
    summary = analyze(random_model(seed=1), make_corpus(24, seed=1), tmp_path, cfg, progress=True)
    assert repr(cfg) == before and summary["config"]["neurons"]["progress"] is True
    assert (tmp_path / "neurons.json").is_file() and not (tmp_path / "heads.json").exists()
