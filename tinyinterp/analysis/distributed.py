"""The analysis under torchrun: which stories a rank streams, and combining statistics with collectives.

``torchrun --nproc_per_node N -m tinyinterp analyze ...`` starts N processes; each joins the
process group the way training does (:func:`tinyinterp.training.distributed.init_distributed`:
gloo on CPU, NCCL on GPU), streams the stories whose index ``i`` has ``i % N == rank`` (the
rule ``--shard i/N`` uses, so both paths add the same per-story sums), and hands its
statistics state dict to :func:`fold_states`. Rank 0 adds them exactly as ``analyze merge``
adds shard files (:meth:`tinyinterp.analysis.sharding.Jobs.add`) and finishes alone (labels,
tests, FDR, examples, ablations, probes, report); the other ranks return and exit.

State dicts are fixed-size (histograms, moment sums, top-k buffers), so what crosses the
network does not grow with the corpus.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from tinyinterp.training.distributed import DistInfo, barrier, check_same, init_distributed, shutdown

log = logging.getLogger(__name__)
__all__ = ["DistInfo", "init_distributed", "barrier", "shutdown", "check_same", "rank_share", "fold_states",
           "all_reduce_sum", "broadcast_object", "distributed_stats", "rank_corpus"]


def rank_share(indices: np.ndarray, info: DistInfo) -> np.ndarray:
    """The entries of ``indices`` (story indices) that rank ``info.rank`` streams: ``i % world == rank``."""
    indices = np.asarray(indices, dtype=np.int64)
    return indices[indices % info.world == info.rank]


def _device(info: DistInfo) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _signature(sd: dict[str, torch.Tensor]) -> str:
    return "|".join(f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in sorted(sd.items()))


def fold_states(sd: dict[str, torch.Tensor], info: DistInfo, add: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """On rank 0, call ``add`` with every other rank's state dict in turn (rank 1, 2, ...); send it elsewhere.

    All ranks must hold the same keys, shapes and dtypes (the same statistics objects); otherwise every
    rank raises with one line. Point-to-point, one rank at a time: rank 0 holds one extra state dict
    whatever the number of ranks (a gather would hold ``world`` of them).
    """
    if not info.enabled:
        return
    check_same(_signature(sd), "set of statistics (keys, shapes, dtypes)", info)
    dev = _device(info)
    keys = sorted(sd)
    if not info.is_main:
        for k in keys:
            dist.send(sd[k].detach().to(dev).contiguous(), dst=0)
        return
    for r in range(1, info.world):
        other = {}
        for k in keys:
            buf = torch.empty(sd[k].shape, dtype=sd[k].dtype, device=dev)
            dist.recv(buf, src=r)
            other[k] = buf.to(sd[k].device)
        add(other)
        del other


def all_reduce_sum(sd: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """Element-wise sum of every rank's ``sd`` (same keys and shapes on every rank), on every rank."""
    if not info.enabled:
        return sd
    check_same(_signature(sd), "set of statistics (keys, shapes, dtypes)", info)
    dev = _device(info)
    out = {}
    for k in sorted(sd):
        t = sd[k].detach().to(dev).clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out[k] = t.to(sd[k].device)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (small, picklable objects made by this process group only)."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def distributed_stats(info: DistInfo) -> Callable[..., tuple[Any, Any]]:
    """A drop-in for :func:`~tinyinterp.analysis.pipeline.heads_and_neurons` under torchrun.

    Every rank calibrates identically (deterministic), streams its share of each story group
    (and of the untrained control's), and sends its statistics to rank 0, which adds them
    (as ``analyze merge`` does) and returns the results; the other ranks return ``(None, None)``.
    """
    from tinyinterp.analysis.engine import eval_mode
    from tinyinterp.analysis.sharding import build_jobs

    def run(model, corpus, hcfg, ncfg, progress: bool = False):
        ncfg = dataclasses.replace(ncfg, in_memory=False)  # ranks add sums; kept activations would not add up
        with eval_mode(model):
            jobs = build_jobs(model, corpus, hcfg, ncfg)
            tokens = jobs.stream((info.rank, info.world), progress and info.is_main,
                                 f"heads + neurons (rank {info.rank}/{info.world})")
            log.info("rank %d/%d: streamed %d tokens", info.rank, info.world, tokens)
            fold_states(jobs.state(), info, jobs.add)
            if not info.is_main:
                return None, None
            return jobs.finish()

    return run


def rank_corpus(model, corpus, max_stories: int | None, info: DistInfo, progress: bool = False):
    """The tagged corpus under torchrun: each rank tags its share into the tag store, then reads the whole corpus.

    ``corpus``: a :class:`~tinyinterp.analysis.corpus.store.TaggedCorpus` (returned as is), sources or texts
    (as :func:`~tinyinterp.analysis.corpus.loading.load_corpus` takes them: files, folders, globs, ``hf:`` names)."""
    from tinyinterp.analysis.corpus.store import TaggedCorpus
    from tinyinterp.analysis.corpus.tag_store import corpus_from_store
    from tinyinterp.analysis.corpus.tagging import tag_into_store
    from tinyinterp.data.readers import load_stories

    if isinstance(corpus, TaggedCorpus):
        return corpus
    items = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus)
    texts = load_stories([os.fspath(x) for x in items], max_stories=max_stories)
    store = tag_into_store(texts[info.rank::info.world], model.tokenizer, progress=progress and info.is_main)
    barrier(info)  # every rank's share is in the store
    return corpus_from_store(texts, store, int(model.cfg.n_ctx))
