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
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from tinyinterp.training.distributed import DistInfo, barrier, check_same, init_distributed, shutdown

log = logging.getLogger(__name__)
__all__ = ["DistInfo", "init_distributed", "barrier", "shutdown", "check_same", "rank_share", "RankSplit", "fold_states",
           "all_reduce_sum", "broadcast_object", "distributed_stats", "rank_corpus", "corpus_for_rank", "share_prepass"]


def rank_share(indices: np.ndarray, info: DistInfo) -> np.ndarray:
    """The entries of ``indices`` (story indices) that rank ``info.rank`` streams: ``i % world == rank``."""
    indices = np.asarray(indices, dtype=np.int64)
    return indices[indices % info.world == info.rank]


@dataclass(frozen=True)
class RankSplit:
    """The calibration passes split over the ranks (:class:`~tinyinterp.analysis.heads.classify.HeadJob`,
    :class:`~tinyinterp.analysis.neurons.job.NeuronJob` take it as ``split``): each rank runs the calibration
    stories it owns (``i % world == rank``, as in the pass) and the results are combined with collectives,
    so every rank ends with the calibration one process computes (up to float summation order)."""

    info: DistInfo

    def owns(self, indices: np.ndarray) -> np.ndarray:
        """bool per entry of ``indices`` (story indices): this rank runs that story."""
        return np.asarray(indices, dtype=np.int64) % self.info.world == self.info.rank

    def sum(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's ``sd`` added, on every rank."""
        return all_reduce_sum(sd, self.info)

    def gather(self, obj: Any) -> list | None:
        """Every rank's ``obj`` (picklable, made by this process group) on rank 0, in rank order; None elsewhere."""
        if not self.info.enabled:
            return [obj]
        out = [None] * self.info.world if self.info.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return broadcast_object(obj, self.info)


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

    The ranks split the calibration passes (:class:`RankSplit`: each runs its share of the
    calibration stories, the calibration is combined with collectives, so every rank bins and
    scores alike), each streams its share of each story group (and of the untrained control's),
    and sends its statistics to rank 0, which adds them (as ``analyze merge`` does) and returns
    the results; the other ranks return ``(None, None)``.
    """
    from tinyinterp.analysis.engine import eval_mode
    from tinyinterp.analysis.sharding import build_jobs

    def run(model, corpus, hcfg, ncfg, progress: bool = False):
        ncfg = dataclasses.replace(ncfg, in_memory=False)  # ranks add sums; kept activations would not add up
        if not info.is_main:  # one set of progress bars (rank 0's)
            hcfg, ncfg = dataclasses.replace(hcfg, progress=False), dataclasses.replace(ncfg, progress=False)
        with eval_mode(model):
            jobs = build_jobs(model, corpus, hcfg, ncfg, RankSplit(info))
            tokens = jobs.stream((info.rank, info.world), progress and info.is_main,
                                 f"heads + neurons (rank {info.rank}/{info.world})")
            log.info("rank %d/%d: streamed %d tokens", info.rank, info.world, tokens)
            fold_states(jobs.state(), info, jobs.add)
            if not info.is_main:
                return None, None
            return jobs.finish()

    return run


def share_prepass(local, positions: np.ndarray, n_stories: int, info: DistInfo, include_continuations: bool = False,
                  exclude_tags=None):
    """The streaming pre-pass: every rank counts its own stories ``local`` (corpus stories ``positions``), and the
    corpus-wide facts the jobs need before their pass are combined on every rank: word x tag counts (the
    vocabularies and the ambiguous-word control), every story's length (which stories the head analysis keeps and
    calibrates on) and analysed tokens (the neuron calibration sample). The story split needs only ``n_stories``.
    Returns a :class:`~tinyinterp.analysis.corpus.prepass.CorpusShare`; every rank calls it (collectives)."""
    from tinyinterp.analysis.corpus.labels import label_corpus
    from tinyinterp.analysis.corpus.prepass import CorpusShare, analysed_per_story, combine_counts, count_corpus
    from tinyinterp.analysis.corpus.store import BOS_TAG, SPACE_TAG

    exclude = tuple(exclude_tags if exclude_tags is not None else (BOS_TAG, SPACE_TAG))
    check_same(str(n_stories), "number of stories in the corpus (pass every rank the same --corpus)", info)
    labels = label_corpus(local, include_continuations, exclude)
    counts = combine_counts(count_corpus(local, include_continuations, exclude, labels), info)
    pos = torch.as_tensor(np.asarray(positions, dtype=np.int64))
    per = {name: torch.zeros(n_stories, dtype=torch.int64) for name in ("lengths", "analysed")}
    per["lengths"][pos] = torch.as_tensor(local.lengths(), dtype=torch.int64)
    per["analysed"][pos] = torch.as_tensor(analysed_per_story(labels), dtype=torch.int64)
    del labels
    per = all_reduce_sum(per, info)
    return CorpusShare(counts, per["lengths"].numpy(), per["analysed"].numpy(), bool(include_continuations), exclude)


def _stream_share(paths: list[str], max_stories: int | None, info: DistInfo) -> tuple[list[str], int]:
    """This rank's stories (``i % world == rank``, numbered as ``load_stories`` numbers them) and the number of
    stories, read in one streaming pass: the rank never holds the others' texts."""
    from tinyinterp.data.readers import iter_stories

    mine, n = [], 0
    for text in iter_stories(paths):
        if max_stories is not None and n >= max_stories:
            break
        if n % info.world == info.rank:
            mine.append(text)
        n += 1
    return mine, n


def rank_corpus(model, corpus, max_stories: int | None, info: DistInfo, progress: bool = False, neurons=None):
    """The tagged corpus of this rank under torchrun.

    Every rank tags its share of the stories (``i % world == rank``) into the tag store. Rank 0, which finishes
    alone (examples, ablations, probes and the report draw on any story), then reads the whole corpus; every
    other rank reads only its own stories and gets the corpus-wide facts from the pre-pass (:func:`share_prepass`),
    its stories placed at their corpus-wide indices (:func:`~tinyinterp.analysis.corpus.prepass.share_corpus`), so
    its memory is its share plus fixed statistics. ``neurons``: the :class:`~tinyinterp.analysis.neurons.NeuronConfig`
    whose label options the pre-pass counts with (default: the defaults). With ``control_max_stories`` set the
    untrained control labels its own subset, which the pre-pass does not count: every rank then reads everything.

    ``corpus``: a :class:`~tinyinterp.analysis.corpus.store.TaggedCorpus` (returned as is), sources or texts
    (as :func:`~tinyinterp.analysis.corpus.loading.load_corpus` takes them: files, folders, globs, ``hf:`` names)."""
    from tinyinterp.analysis.corpus.store import TaggedCorpus
    from tinyinterp.analysis.corpus.tagging import tag_into_store
    from tinyinterp.analysis.neurons.config import NeuronConfig
    from tinyinterp.data.readers import load_stories

    if isinstance(corpus, TaggedCorpus):
        return corpus
    ncfg = neurons if neurons is not None else NeuronConfig()
    items = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus)
    paths = [os.fspath(x) for x in items]
    whole = info.is_main or (ncfg.untrained_control and ncfg.control_max_stories is not None)
    if whole:
        texts = load_stories(paths, max_stories=max_stories)
        mine, n = texts[info.rank::info.world], len(texts)
    else:
        mine, n = _stream_share(paths, max_stories, info)
    if n < info.world:
        from tinyinterp.errors import DataError

        raise DataError(f"{n} stories for {info.world} ranks: every rank needs a story; use fewer ranks or more stories")
    store = tag_into_store(mine, model.tokenizer, progress=progress and info.is_main)
    barrier(info)  # every rank's share is in the store
    return corpus_for_rank(store, int(model.cfg.n_ctx), info, mine, n, texts if whole else None, ncfg)


def corpus_for_rank(store, n_ctx: int, info: DistInfo, mine: list[str], n_stories: int, texts: list[str] | None = None,
                    neurons=None):
    """This rank's corpus from a tag store that holds every story: the whole corpus when ``texts`` (every story) is
    given, else this rank's stories ``mine`` (story ``i`` with ``i % world == rank``) placed at their corpus-wide
    indices with the pre-pass's facts. Every rank calls it (the pre-pass is collective)."""
    from tinyinterp.analysis.corpus.prepass import share_corpus
    from tinyinterp.analysis.corpus.tag_store import corpus_from_store

    inc, exc = (False, None) if neurons is None else (neurons.include_continuations, neurons.exclude_tags)
    positions = np.arange(info.rank, n_stories, info.world)
    if texts is not None:
        full = corpus_from_store(texts, store, n_ctx)
        share_prepass(full.subset(positions), positions, n_stories, info, inc, exc)
        return full
    local = corpus_from_store(mine, store, n_ctx, keep_text=False)
    share = share_prepass(local, positions, n_stories, info, inc, exc)
    log.info("rank %d/%d: holds %d of %d stories (%d tokens)", info.rank, info.world, len(local), n_stories, local.n_tokens)
    return share_corpus(local, positions, share)
