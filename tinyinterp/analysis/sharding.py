"""Sharded analysis: split the streaming pass over processes or machines, then merge.

``tinyinterp analyze CKPT --corpus F --out S0 --shard 0/2`` (and ``1/2`` elsewhere) runs
the single forward pass of :func:`~tinyinterp.analysis.pipeline.heads_and_neurons` over
the stories whose index ``i`` has ``i % n == shard`` and writes what it accumulated: every
head sum (:class:`~tinyinterp.analysis.heads.scores.MainPass`), the per-story sums of the head
output effects and label axes (:class:`~tinyinterp.analysis.heads.effects_pass.EffectsPass`), the neuron histograms and
moments of both halves (:class:`~tinyinterp.analysis.neurons.stats.TagStats`), the top-k
buffer, the exact-tail AP histogram, and the same for the untrained control (shards stream:
``NeuronConfig.in_memory`` is off, so the identity tests that need every token's activations
are reported untestable after the merge). These are sums (and a top-k) over disjoint
stories, so adding them gives the statistics of the whole corpus, up to float summation
order. ``tinyinterp analyze merge S0 S1 --out DIR`` checks that the shards belong together
(same model weights, same tagged corpus, same configuration, shards ``0..n-1`` exactly once),
adds them and runs everything that needs all the statistics: labels and tests, FDR,
examples, ablations, probes and the report, exactly as an unsharded ``analyze`` would.

Every shard tags the whole corpus and repeats the calibration passes (a fixed number of
stories, independent of the corpus size), so that all shards bin and score identically;
the merge step does so once more. A shard folder holds ``shard.json`` (provenance and
fingerprints) and ``stats.safetensors``: each consumer's ``state_dict()`` under its prefix
(``heads.``, ``head_effects.``, ``neurons.``, ``control.``); the merge hands each prefix back to the same consumer's
``merge_state()``, so this module never reads another class's attributes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tinyinterp.analysis.engine import eval_mode, run_pass
from tinyinterp.analysis.heap import TRIM_EVERY
from tinyinterp.analysis.heads.classify import HeadJob
from tinyinterp.analysis.heads.results import HeadResults
from tinyinterp.analysis.neurons.job import NeuronJob
from tinyinterp.analysis.neurons.results import NeuronResults
from tinyinterp.analysis.results_io import check_complete, folder_lock, jsonable, staged_results
from tinyinterp.atomic import write_json
from tinyinterp.errors import ConfigError, TinyInterpError

log = logging.getLogger(__name__)
SHARD_FORMAT = 1
SHARD_JSON, STATS = "shard.json", "stats.safetensors"


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise ConfigError(f"--shard {spec!r}: expected i/n with integers, e.g. 0/4 (the first of four shards)") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {spec!r}: need n >= 1 and 0 <= i < n (shards are numbered from 0)")
    return i, n


def shard_groups(groups: Sequence[np.ndarray], i: int, n: int) -> list[np.ndarray]:
    """The stories of each group that belong to shard ``i`` of ``n`` (story index mod ``n``)."""
    return [np.asarray(g)[np.asarray(g) % n == i] for g in groups]


# ------------------------------------------------------------------------------------ fingerprints


def model_fingerprint(model) -> str:
    """sha256 of the model's parameters and buffers (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        a = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}\0{tuple(t.shape)}\0{a.dtype}\0".encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()


def corpus_fingerprint(corpus) -> str:
    """sha256 of the tagged corpus as the analysis sees it: token ids, story bounds, UPOS, words."""
    store = corpus.packed()
    h = hashlib.sha256(f"{corpus.spacy_model}\0{len(store)}\0".encode())
    h.update(np.ascontiguousarray(store.lengths, dtype=np.int64).tobytes())
    for name in ("tokens", "cont", "upos", "word"):
        h.update(np.ascontiguousarray(store.flat(name)).astype(np.int64).tobytes())
    for name in ("upos", "word"):
        h.update("\0".join(store.vocab[name]).encode("utf-8"))
    return h.hexdigest()


# ----------------------------------------------------------------------------------- the two sides


@dataclass
class Jobs:
    """The streaming consumers of one analysis: heads, neurons and the untrained control's neurons."""

    heads: HeadJob
    neurons: NeuronJob
    control: NeuronJob | None  # on the untrained twin, when configured
    twin: Any | None

    def parts(self) -> dict[str, Any]:
        """Prefix in the statistics file -> the consumer whose ``state_dict()`` / ``merge_state()`` it holds."""
        out = {"heads": self.heads.main, "head_effects": self.heads.effects, "neurons": self.neurons}
        return out if self.control is None else {**out, "control": self.control}

    def state(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v.detach().cpu().contiguous()
                for name, part in self.parts().items() for k, v in part.state_dict().items()}

    def add(self, sd: dict[str, torch.Tensor]) -> None:
        for name, part in self.parts().items():
            part.merge_state({k.partition(".")[2]: v for k, v in sd.items() if k.startswith(f"{name}.")})

    def stream(self, shard: tuple[int, int] = (0, 1), progress: bool = False, desc: str = "heads + neurons") -> int:
        """Run the shared pass over shard ``(i, n)`` of the stories (default: all of them), then the
        untrained control's pass over the same share of its stories. Returns the model's tokens."""
        i, n = shard
        model, corpus = self.heads.model, self.heads.corpus
        bt = min(self.heads.cfg.batch_tokens, self.neurons.cfg.batch_tokens)
        trim = TRIM_EVERY if self.neurons.kept is not None else 1  # kept activations: memory grows by design anyway
        tokens = run_pass(model, corpus, [*self.heads.consumers, self.neurons], shard_groups(self.neurons.groups, i, n), bt,
                          progress, desc, trim)
        if self.control is not None:
            run_pass(self.twin, self.control.corpus, [self.control], shard_groups(self.control.groups, i, n), bt,
                     progress, f"{desc}: untrained control")
        return tokens

    def finish(self) -> tuple[HeadResults, NeuronResults]:
        """Scores, labels and tests from the accumulated (or added) statistics."""
        if self.control is not None:
            self.neurons.control_result = self.control.finish()
        return self.heads.finish(), self.neurons.finish()


def build_jobs(model, corpus, hcfg, ncfg, split=None) -> Jobs:
    """Calibrate every consumer (deterministic: every shard and the merge get the same bins and profiles).

    ``split``: a :class:`~tinyinterp.analysis.distributed.RankSplit` under torchrun, where the ranks share
    the calibration passes and combine them with collectives; ``--shard i/n`` processes cannot talk to
    each other, so each repeats the whole calibration (``split=None``)."""
    hjob, njob = HeadJob(model, corpus, hcfg, split), NeuronJob(model, corpus, ncfg, split=split)
    control = njob.control_job()
    return Jobs(hjob, njob, control, None if control is None else control.model)


def run_shard(model, corpus, out: str | os.PathLike, hcfg, ncfg, shard: tuple[int, int], provenance: dict[str, Any],
              progress: bool = True) -> dict[str, Any]:
    """Stream shard ``shard = (i, n)`` of ``corpus`` and write its statistics to ``out``."""
    i, n = shard
    out = Path(out)
    ncfg = dataclasses.replace(ncfg, in_memory=False)  # a shard's sums merge; kept activations would not
    with folder_lock(out), eval_mode(model):
        jobs = build_jobs(model, corpus, hcfg, ncfg)
        tokens = jobs.stream(shard, progress, f"shard {i}/{n}")
        meta = {
            "format": SHARD_FORMAT, "shard": i, "n_shards": n, "tokens": tokens,
            "stories": int(sum(len(g) for g in shard_groups(jobs.neurons.groups, i, n))),
            "model_sha256": model_fingerprint(model), "corpus_sha256": corpus_fingerprint(corpus),
            "corpus_stories": len(corpus), "config": _configs_json(hcfg, ncfg), **provenance,
        }
        with staged_results(out, {"shard": f"{i}/{n}"}) as stage:  # both files, complete.json last
            save_file(jobs.state(), str(stage / STATS))
            write_json(stage / SHARD_JSON, meta)
    log.info("shard %d/%d: %d stories, %d tokens written to %s", i, n, meta["stories"], tokens, out)
    return meta


def read_shards(dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Each shard's ``shard.json``, checked to form one complete, consistent set."""
    metas = []
    for d in dirs:
        p = Path(d) / SHARD_JSON
        if not p.is_file():
            raise TinyInterpError(f"{d}: no {SHARD_JSON}; pass folders written by `tinyinterp analyze ... --shard i/n`")
        try:
            m = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise TinyInterpError(f"{p}: not valid JSON ({exc.msg}); rerun that shard") from None
        if m.get("format") != SHARD_FORMAT:
            raise TinyInterpError(f"{p}: shard format {m.get('format')!r}, this tinyinterp reads {SHARD_FORMAT}; rerun the shard")
        if not (Path(d) / STATS).is_file():
            raise TinyInterpError(f"{d}: {STATS} is missing (the shard did not finish); rerun that shard")
        try:  # a shard killed between its two files leaves no (or another run's) complete.json
            files = check_complete(d)["files"]
        except TinyInterpError as exc:
            raise TinyInterpError(str(exc).replace("tinyinterp analyze ...", "tinyinterp analyze ... --shard i/n")) from None
        if not {STATS, SHARD_JSON} <= set(files):
            raise TinyInterpError(f"{d}: its complete.json does not list {STATS} and {SHARD_JSON}; rerun that shard")
        _check_header(Path(d) / STATS)
        missing = [k for k in ("shard", "n_shards", "model_sha256", "corpus_sha256", "config", "ckpt", "corpus", "options")
                   if k not in m]
        if missing:
            raise TinyInterpError(f"{p}: missing field(s) {missing}; the file was edited or is incomplete, rerun that shard")
        metas.append({**m, "dir": str(d)})
    if not metas:
        raise TinyInterpError("no shard folders given; pass every folder written by `analyze --shard i/n`")
    first = metas[0]
    for m in metas[1:]:
        for key, what in (("n_shards", "number of shards"), ("model_sha256", "model weights"),
                          ("corpus_sha256", "tagged corpus"), ("config", "analysis configuration")):
            if m[key] != first[key]:
                raise TinyInterpError(f"{m['dir']} and {first['dir']} differ in {what}; merge shards of one run only")
    got = sorted(m["shard"] for m in metas)
    if got != list(range(first["n_shards"])):
        missing = sorted(set(range(first["n_shards"])) - set(got))
        dup = sorted({s for s in got if got.count(s) > 1})
        raise TinyInterpError(f"shards {got} of {first['n_shards']}: missing {missing}, duplicated {dup}; "
                              "pass every shard folder exactly once")
    return metas


def merged_stats(model, corpus, metas: list[dict[str, Any]], hcfg, ncfg) -> Callable[..., tuple[HeadResults, NeuronResults]]:
    """A drop-in for :func:`~tinyinterp.analysis.pipeline.heads_and_neurons` that adds the shards'
    statistics instead of running the pass (checks the model and corpus are the shards' own)."""
    first = metas[0]
    if model_fingerprint(model) != first["model_sha256"]:
        raise TinyInterpError(f"{first['dir']}: the shards were computed with other model weights than {first.get('model')}; "
                              "pass --ckpt with the shards' checkpoint")
    if corpus_fingerprint(corpus) != first["corpus_sha256"]:
        raise TinyInterpError(f"{first['dir']}: the corpus differs from the shards' (stories, tokeniser or spaCy model); "
                              "pass the same --corpus and --max-stories as the shards")
    if _configs_json(hcfg, ncfg) != first["config"]:
        raise TinyInterpError(f"{first['dir']}: the analysis configuration differs from the shards'; merge with the shards' options")

    def finish(model, corpus, hcfg, ncfg, progress=False):
        with eval_mode(model):
            jobs = build_jobs(model, corpus, hcfg, ncfg)
            want = jobs.state()  # the tensors every shard must hold, with their shapes and dtypes
            for m in metas:
                jobs.add(_read_stats(Path(m["dir"]) / STATS, want))
            return jobs.finish()

    return finish


def _check_header(path: Path) -> None:
    """Fail fast (before loading the model and corpus) on a truncated or foreign stats file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:  # also checks the header covers the file exactly
            keys = set(fh.keys())
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise TinyInterpError(f"{path}: unreadable ({type(exc).__name__}: {exc}); rerun that shard") from None
    if "heads.obs" not in keys:
        raise TinyInterpError(f"{path}: not the statistics of an `analyze --shard` run; rerun that shard")


def _read_stats(path: Path, want: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A shard's statistics, checked against ``want``: the tensors this merge accumulates into."""
    try:
        sd = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise TinyInterpError(f"{path}: unreadable ({type(exc).__name__}: {exc}); rerun that shard") from None
    for k, v in want.items():
        got = sd.get(k)
        if k.endswith(".top.values") or k.endswith(".top.story") or k.endswith(".top.pos"):
            ok = got is not None and got.shape[0] == v.shape[0]
        else:
            ok = got is not None and got.shape == v.shape and got.dtype == v.dtype
        if not ok:
            what = "missing" if got is None else f"shape {tuple(got.shape)} {got.dtype}, expected {tuple(v.shape)} {v.dtype}"
            raise TinyInterpError(f"{path}: statistic {k} is {what}; the shard does not match this analysis, rerun it")
        padded = k.endswith(".top.values") or k.endswith(".tail.values")  # -inf marks empty slots
        if got.is_floating_point() and not padded and not torch.isfinite(got).all():
            raise TinyInterpError(f"{path}: statistic {k} holds NaN or inf; rerun that shard")
    return sd


def _configs_json(hcfg, ncfg) -> dict[str, Any]:
    drop = {"progress"}
    return jsonable({"heads": {k: v for k, v in asdict(hcfg).items() if k not in drop},
                     "neurons": {k: v for k, v in asdict(ncfg).items() if k not in drop}})
