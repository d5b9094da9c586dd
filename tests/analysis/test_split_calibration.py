"""The calibration passes split over ranks (torchrun) give the one-process calibration.

Two ranks are simulated in one process with a stand-in for :class:`RankSplit`: rank 1 runs its
share first (its all-reduce contribution and gathered activations are recorded), then rank 0 runs
its share and combines. Each rank must run only the stories it owns.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

STORIES = Path(__file__).resolve().parents[1] / "golden" / "stories.txt"


class _Rank:
    """Rank ``rank`` of 2; ``peer`` is rank 1's record (filled when rank 1 runs first)."""

    def __init__(self, rank: int, peer: dict):
        self.rank, self.peer = rank, peer

    def owns(self, indices):
        return np.asarray(indices) % 2 == self.rank

    def sum(self, sd):
        if self.rank == 1:
            self.peer["sum"] = {k: v.clone() for k, v in sd.items()}
            return sd
        return {k: v + self.peer["sum"][k] for k, v in sd.items()}

    def gather(self, obj):
        if self.rank == 1:
            self.peer["gather"] = obj
            return None
        return [obj, self.peer["gather"]]

    def broadcast(self, obj):
        return torch.arange(5.0)[None] if obj is None else obj  # rank 1: a stand-in (its job is not checked)


@pytest.fixture(scope="module")
def setup(tiny_ckpt):
    from tinyinterp.analysis.corpus.loading import corpus_from_texts
    from tinyinterp.checkpoint import load_model
    from tinyinterp.data.readers import iter_stories

    model = load_model(tiny_ckpt)
    model.eval()
    corpus = corpus_from_texts(list(islice(iter_stories([str(STORIES)]), 40)), model, progress=False)
    return model, corpus


def test_split_head_calibration_equals_one_process(setup, monkeypatch):
    import tinyinterp.analysis.heads.calibration as cal_mod
    from tinyinterp.analysis.heads import HeadConfig
    from tinyinterp.analysis.heads.classify import HeadJob

    model, corpus = setup
    cfg = HeadConfig(calibration_stories=24, progress=False)
    one = HeadJob(model, corpus, cfg).cal
    ran: list[set] = []
    real_plan = cal_mod.plan_batches

    def plan(lengths, bt, indices=None):  # record which calibration stories each rank runs
        ran[-1] |= set(np.asarray(indices).tolist())
        return real_plan(lengths, bt, indices)

    monkeypatch.setattr(cal_mod, "plan_batches", plan)
    peer: dict = {}
    jobs = []
    for rank in (1, 0):
        ran.append(set())
        jobs.append(HeadJob(model, corpus, cfg, split=_Rank(rank, peer)))
    cal_idx = jobs[1].cal_idx
    for rank, got in zip((1, 0), ran):  # positions in cal_idx -> story indices
        assert {int(cal_idx[i]) for i in got} == {int(i) for i in cal_idx if i % 2 == rank}
    two = jobs[1].cal
    assert two.n_stories == one.n_stories and two.n_rows == one.n_rows
    np.testing.assert_allclose(two.profile, one.profile, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(two.profile_rows, one.profile_rows)
    np.testing.assert_allclose(two.js, one.js, rtol=1e-5, atol=1e-7)
    assert np.abs(one.js).sum() > 0 and np.abs(one.profile).sum() > 0  # the comparison has something to compare


def test_split_neuron_bin_edges_equal_one_process(setup, monkeypatch):
    import tinyinterp.analysis.neurons.job as job_mod
    from tinyinterp.analysis.neurons import NeuronConfig

    model, corpus = setup
    # torchrun ranks stream; the exact (in-memory) mode keeps activations instead of binning, so it has no bin edges
    cfg = NeuronConfig(calib_tokens=300, untrained_control=False, in_memory=False)
    one = job_mod.NeuronJob(model, corpus, cfg)
    take = one.labels.sample_stories(one.sel_idx, cfg.calib_tokens, cfg.split_seed + 1)
    assert len(take) >= 4  # several stories, so both ranks hold some and the cut falls inside the sample
    streamed: list[list[int]] = []
    real_stream = job_mod.stream_activations

    def stream(model, corpus, hooks, bt, indices=None, **kw):
        streamed.append(sorted(int(i) for i in indices))
        return real_stream(model, corpus, hooks, bt, indices=indices, **kw)

    monkeypatch.setattr(job_mod, "stream_activations", stream)
    peer: dict = {}
    job_mod.NeuronJob(model, corpus, cfg, split=_Rank(1, peer))
    two = job_mod.NeuronJob(model, corpus, cfg, split=_Rank(0, peer))
    assert streamed == [sorted(int(i) for i in take if i % 2 == r) for r in (1, 0)]
    edges_one, edges_two = one.stats[0].edges, two.stats[0].edges
    assert edges_one.shape == edges_two.shape
    torch.testing.assert_close(edges_two, edges_one, rtol=1e-5, atol=1e-6)
