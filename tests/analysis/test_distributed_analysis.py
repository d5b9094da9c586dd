"""2 ranks on gloo (torch.multiprocessing): the same results as one process; the pre-pass equals the whole-corpus labels."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from tests.support.compare import assert_close as _close

STORIES = Path(__file__).resolve().parents[1] / "golden" / "stories.txt"
N_STORIES = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tiny_ckpt, tmp_path_factory):
    import torch.multiprocessing as mp

    from tests.analysis.dist_worker import analysis_worker

    out = tmp_path_factory.mktemp("dist")
    mp.spawn(analysis_worker, args=(2, _free_port(), str(tiny_ckpt), str(STORIES), str(out), N_STORIES), nprocs=2)
    return out


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(two_ranks, tiny_ckpt, tmp_path):
    from itertools import islice

    from tinyinterp.analysis.heads import HeadConfig
    from tinyinterp.analysis.neurons import NeuronConfig
    from tinyinterp.analysis.pipeline import heads_and_neurons
    from tinyinterp.analysis.corpus.loading import corpus_from_texts
    from tinyinterp.checkpoint import load_model
    from tinyinterp.data.readers import iter_stories

    model = load_model(tiny_ckpt)
    corpus = corpus_from_texts(list(islice(iter_stories([str(STORIES)]), N_STORIES)), model, progress=False)
    heads, neurons = heads_and_neurons(model, corpus, HeadConfig(), NeuronConfig(in_memory=False))  # ranks stream
    heads.save(tmp_path)
    neurons.save(tmp_path)
    for name in ("heads.json", "neurons.json", "neurons_summary.json"):
        one, two = (json.loads((d / name).read_text()) for d in (tmp_path, two_ranks / "dist"))
        _close(one, two, name)
    assert json.loads((two_ranks / "dist" / "neurons_summary.json").read_text())["n_stories"] == N_STORIES


@pytest.mark.slow
def test_a_rank_other_than_0_holds_only_its_stories(two_ranks):
    """Rank 1 packed only its own stories (and one empty placeholder), yet sees the corpus-wide story indices."""
    r0, r1 = (json.loads((two_ranks / f"held{r}.json").read_text()) for r in range(2))
    assert r0["n"] == r1["n"] == N_STORIES
    assert not r0["share"] and r0["stories"] == list(range(N_STORIES))  # rank 0 finishes: it reads everything
    assert r1["share"] and r1["stories"] == list(range(1, N_STORIES, 2))
    assert r1["packed_stories"] == N_STORIES // 2 + 1 and r1["packed_tokens"] == r1["tokens"] < r0["tokens"] * 0.6


@pytest.mark.slow
def test_prepass_counts_over_ranks_equal_the_whole_corpus_labels(two_ranks, tiny_ckpt):
    from itertools import islice

    from tinyinterp.analysis.corpus.labels import label_corpus
    from tinyinterp.analysis.corpus.loading import corpus_from_texts
    from tinyinterp.analysis.corpus.prepass import CorpusCounts
    from tinyinterp.checkpoint import load_model
    from tinyinterp.data.readers import iter_stories

    got = json.loads((two_ranks / "prepass.json").read_text())
    assert got["summed"] == [3.0, 4.0] and got["parts"] == 2  # one part per rank: each tagged only its share
    counts = CorpusCounts.from_json(got["counts"])
    model = load_model(tiny_ckpt)
    corpus = corpus_from_texts(list(islice(iter_stories([str(STORIES)]), N_STORIES)), model, progress=False)
    labels = label_corpus(corpus)
    assert counts.n_stories == len(corpus) and counts.n_tokens == corpus.n_tokens
    assert counts.tags == labels.tags and counts.words == labels.words
    assert np.array_equal(counts.tag_counts(), labels.tag_counts)
    for seed in (0, 3):
        for a, b in zip(counts.split_indices(seed), corpus.split_indices(seed)):
            assert np.array_equal(a, b)


def test_fold_states_hands_rank_0_every_other_rank_in_order(tmp_path):
    import torch.multiprocessing as mp

    from tests.analysis.dist_worker import fold_worker

    mp.spawn(fold_worker, args=(3, _free_port(), str(tmp_path)), nprocs=3)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert got[0]["seen"] == [{"sum": [[1.0] * 3] * 2, "ids": [1, 10]}, {"sum": [[2.0] * 3] * 2, "ids": [2, 20]}]
    assert got[1]["seen"] == got[2]["seen"] == []
    for g in got:  # the rank with another shape makes every rank stop with the same one line
        assert "ranks [2] see a different set of statistics" in g["refused"] and "\n" not in g["refused"]
