"""Worker of the 2-rank gloo tests (started by torch.multiprocessing; not a test module)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def analysis_worker(rank: int, world: int, port: int, ckpt: str, stories: str, out: str, max_stories: int) -> None:
    """One rank: tag its share into a shared store, pre-pass counts; then the corpus as ``analyze`` builds it under
    torchrun (rank 0 the whole corpus, rank 1 its share) and the heads + neurons pass; rank 0 writes."""
    import numpy as np
    import torch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from itertools import islice

    from tinyinterp.analysis.distributed import (all_reduce_sum, barrier, distributed_stats, init_distributed, rank_corpus,
                                                 shutdown)
    from tinyinterp.analysis.heads import HeadConfig
    from tinyinterp.analysis.neurons import NeuronConfig
    from tinyinterp.analysis.corpus.prepass import chunked, combine_counts, count_stories, own_stories
    from tinyinterp.analysis.corpus.tag_store import corpus_from_store
    from tinyinterp.analysis.corpus.tagging import tag_into_store
    from tinyinterp.checkpoint import load_model
    from tinyinterp.data.readers import iter_stories

    info = init_distributed("cpu")
    try:
        out_dir = Path(out)
        model = load_model(ckpt)
        texts = list(islice(iter_stories([stories]), max_stories))
        mine = [t for _, t in own_stories(texts, rank, world)]
        store = tag_into_store(mine, model.tokenizer, out_dir / "store", progress=False)  # each rank tags its share
        barrier(info)
        store.refresh()
        chunks = (corpus_from_store(c, store, int(model.cfg.n_ctx), keep_text=False) for c in chunked(mine, 7))
        counts = combine_counts(count_stories(chunks), info)
        summed = all_reduce_sum({"x": torch.tensor([rank + 1.0, 2.0])}, info)["x"]
        corpus = rank_corpus(model, [stories], max_stories, info, neurons=NeuronConfig())  # rank 0: all; others: share
        held = np.nonzero(corpus.lengths() > 0)[0]
        (out_dir / f"held{rank}.json").write_text(json.dumps({
            "stories": held.tolist(), "n": len(corpus), "share": corpus.share is not None,
            "packed_stories": len(corpus.packed()._data.texts), "packed_tokens": int(corpus.packed()._data.tokens.size),
            "tokens": int(corpus.lengths().sum())}))
        heads, neurons = distributed_stats(info)(model, corpus, HeadConfig(), NeuronConfig())
        if info.is_main:
            heads.save(out_dir / "dist")
            neurons.save(out_dir / "dist")
            (out_dir / "prepass.json").write_text(json.dumps({"counts": counts.to_json(), "summed": summed.tolist(),
                                                              "parts": store.n_parts}))
        else:
            assert heads is None and neurons is None
    finally:
        shutdown(info)


def fold_worker(rank: int, world: int, port: int, out: str) -> None:
    """Rank 0 folds the others' small state dicts in order; then a rank with other keys makes every rank refuse."""
    import torch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from tinyinterp.analysis.distributed import fold_states, init_distributed, shutdown
    from tinyinterp.errors import TinyInterpError

    info = init_distributed("cpu")
    try:
        seen = []
        sd = {"sum": torch.full((2, 3), float(rank)), "ids": torch.tensor([rank, 10 * rank])}
        fold_states(sd, info, lambda other: seen.append({k: v.tolist() for k, v in other.items()}))
        try:
            fold_states({"sum": torch.zeros(2, 3 + (rank == 2))}, info, lambda other: None)
            refused = ""
        except TinyInterpError as exc:
            refused = str(exc)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"seen": seen, "refused": refused}))
    finally:
        shutdown(info)
