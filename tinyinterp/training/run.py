"""``train()``: corpus → tokenizer → token shards → TinyTransformer → HookedTransformer checkpoint."""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from tinyinterp._version import __version__
from tinyinterp.checkpoint import CARD, CONFIG, DEFINING_FILES, MANIFEST, SAVING, TRAINING, save_checkpoint
from tinyinterp.data.batches import WindowSampler, eval_windows
from tinyinterp.data.readers import iter_stories, resolve_sources
from tinyinterp.data.token_shards import PreparedData, prepare_data
from tinyinterp.data.tokenizer import load_tokenizer, token_byte_lengths, train_bpe
from tinyinterp.errors import CheckpointError, ConfigError
from tinyinterp.evaluate import evaluate_windows
from tinyinterp.generate import generate
from tinyinterp.hashing import sha256_file, sha256_json
from tinyinterp.models.presets import preset_model_config
from tinyinterp.models.convert import to_hooked_state_dict
from tinyinterp.models.hooked import hooked_buffers
from tinyinterp.models.transformer import TinyTransformer
from tinyinterp.output_folder import check_output, claimed, mark
from tinyinterp.training.card import render_card
from tinyinterp.training.config import TrainConfig
from tinyinterp.training.distributed import DistInfo, barrier, check_same, init_distributed, shutdown
from tinyinterp.training.state import RESUME, has_state, load_state, save_state
from tinyinterp.training.trainer import Trainer

log = logging.getLogger(__name__)
CARD_PROMPTS = ["Once upon a time", "Lily and Tom went to", "The little dog was"]
# fields that may change between a run and its resumption without breaking determinism
RESUMABLE_CHANGES = {"eval_every", "log_every", "save_every", "eval_tokens", "sample_prompts", "sample_tokens", "threads"}
# a new budget is allowed too: the cosine schedule is then recomputed for the new total
BUDGET_FIELDS = {"max_steps", "max_tokens", "epochs"}


# every name `train` writes into --out: its marker lists them; --overwrite replaces them and nothing else
RUN_FILES = sorted(DEFINING_FILES | {MANIFEST, CARD, SAVING, "metrics.jsonl", RESUME, RESUME + ".old", "snapshots"})


def _tokenizer_for(cfg: TrainConfig, main: bool) -> Path:
    if cfg.tokenizer:
        load_tokenizer(cfg.tokenizer)  # validates
        return Path(cfg.tokenizer)
    from tinyinterp.cache import cache_dir

    srcs = resolve_sources(cfg.data)
    key = sha256_json([[s.sha256 or s.path for s in srcs], cfg.vocab_size, cfg.dedupe])[:16]
    path = cache_dir("tokenizers") / key
    if main and not (path / "tokenizer.json").exists():
        log.info("training a %d-id byte-level BPE on the training data", cfg.vocab_size)
        train_bpe(iter_stories(srcs, dedupe=cfg.dedupe), path, vocab_size=cfg.vocab_size,
                  corpus_name=", ".join(s.path for s in srcs), cache=True)
    return path


def _legacy_run(out: Path) -> list[str] | None:
    """A run folder written before output markers: it has a checkpoint, resume state or metrics."""
    present = [n for n in RUN_FILES if (out / n).exists()]
    return RUN_FILES if {CONFIG, TRAINING, RESUME, "metrics.jsonl"} & set(present) else None


def _check_out(out: Path, cfg: TrainConfig, overwrite: bool, resume: bool) -> bool:
    """Validate ``--out`` (see :mod:`tinyinterp.output_folder`); True when an old run there is to be cleared."""
    inputs = [*cfg.data, *cfg.eval_data, *([cfg.tokenizer] if cfg.tokenizer else [])]
    mine = check_output(out, "train", inputs, overwrite or resume, _legacy_run, what="checkpoint",
                        fix="pass --resume to continue it or --overwrite to replace it (only the files a run writes)")
    if resume:
        if not has_state(out):
            raise ConfigError(f"{out}: --resume given but there is no resumable state ({RESUME}/); start without --resume")
        return False
    return bool(mine) and any((out / n).exists() for n in RUN_FILES)


@contextmanager
def _claim_out(out: Path, cfg: TrainConfig, overwrite: bool, resume: bool, dist: DistInfo) -> Iterator[bool]:
    """On the main process: check ``--out``, create it and hold its lock for the whole run (one
    writer per folder); yield whether an old run is to be cleared. Other processes yield False."""
    if not dist.is_main:
        yield False
        return
    with claimed(out, lambda: _check_out(out, cfg, overwrite, resume), "checkpoint") as clear:
        for stale in out.glob(".resume-*"):  # a save_state killed before its swap
            shutil.rmtree(stale, ignore_errors=True)
        yield clear


def _clear_old_run(out: Path) -> None:
    """Remove an old run's files (--overwrite), once the new run's data is ready; only the names
    ``train`` writes (:data:`RUN_FILES`), so files the user added stay."""
    for name in RUN_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _total_steps(cfg: TrainConfig, train_tokens: int, global_batch: int, n_ctx: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    tokens = cfg.max_tokens if cfg.max_tokens is not None else cfg.epochs * train_tokens
    return max(1, math.ceil(tokens / (global_batch * n_ctx)))


def train(cfg: TrainConfig, out: str | Path, overwrite: bool = False, resume: bool = False,
          stop_after: int | None = None, command: str | None = None) -> Path:
    """Train a model as configured and write a HookedTransformer checkpoint to ``out``.

    ``out`` follows :mod:`tinyinterp.output_folder`: new, empty, or an earlier run (continued
    with ``resume``, replaced with ``overwrite``: only the files a run writes). The folder is
    locked for the whole run. ``stop_after`` stops (after saving) at that step, as a crash
    would: used by tests.
    """
    out = Path(out).expanduser()
    dist = init_distributed(cfg.device)
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        with _claim_out(out, cfg, overwrite, resume, dist) as clear:
            run = _Run(cfg, out, dist, command)
            run.prepare(clear, fresh=not resume)
            trainer = run.trainer(stop_after)
            if resume:
                run.resume(trainer)
            elif dist.is_main:
                (out / "metrics.jsonl").write_text("")
            trainer.run()
            barrier(dist)  # let rank 0 finish its final save before anyone tears the group down
        return out
    finally:
        shutdown(dist)


class _Run:
    """One training run's pieces: data, tokenizer, model, and what the trainer calls back."""

    def __init__(self, cfg: TrainConfig, out: Path, dist: DistInfo, command: str | None):
        self.cfg, self.out, self.dist, self.command = cfg, out, dist, command

    def _data(self, tok_dir: Path) -> PreparedData:
        cfg = self.cfg
        return PreparedData.open(prepare_data(cfg.data, tok_dir, eval_sources=cfg.eval_data or None,
                                              val_fraction=cfg.val_fraction, dedupe=cfg.dedupe))

    def prepare(self, clear: bool, fresh: bool) -> None:
        """Tokenizer, token shards (rank 0 first), model and evaluation windows. Only once the data
        is ready is ``out`` touched (``clear``: an old run removed; ``fresh``: the marker written),
        so a bad corpus leaves it as it was (or absent)."""
        cfg, dist = self.cfg, self.dist
        self.tok_dir = _tokenizer_for(cfg, dist.local_rank == 0)  # once per machine: caches are per machine
        if dist.is_main:
            self.data = self._data(self.tok_dir)
            if clear:
                _clear_old_run(self.out)
            if fresh:
                mark(self.out, "train", RUN_FILES)
        barrier(dist)
        if not dist.is_main:
            self.data = self._data(self.tok_dir)
        self.tokenizer = load_tokenizer(self.tok_dir)
        check_same(f"{sha256_file(self.tok_dir / 'tokenizer.json')}:{self.data.n_tokens('train')}:"
                   f"{self.data.n_tokens('val')}", "tokenizer or training data", dist)
        self.model_cfg = preset_model_config(cfg.preset, d_vocab=len(self.tokenizer), **cfg.model_overrides)
        self.model_cfg.check_fits_memory("--preset / --model-config")
        self.n_ctx = self.model_cfg.n_ctx
        torch.manual_seed(cfg.seed)
        self.model = TinyTransformer(self.model_cfg.to_dict(), dropout=cfg.dropout)
        self.sampler = WindowSampler(self.data.tokens("train"), self.n_ctx, cfg.seed)
        global_batch = cfg.batch_size * cfg.grad_accum * dist.world
        self.total = _total_steps(cfg, self.data.n_tokens("train"), global_batch, self.n_ctx)
        self.byte_table = token_byte_lengths(self.tokenizer)
        self.val_windows = eval_windows(self.data.tokens("val"), self.n_ctx)
        if len(self.val_windows) == 0 and dist.is_main:
            log.warning("the validation split is empty: no evaluation during training; pass --eval FILES or raise --val-fraction")
        with torch.random.fork_rng(devices=[]):  # building it must not move the training RNG
            self.ht_buffers = hooked_buffers(self.model_cfg)

    def trainer(self, stop_after: int | None) -> Trainer:
        return Trainer(self.cfg, self.model, self.sampler, self.total, self.out,
                       evaluate=self.evaluate if len(self.val_windows) else None, save=self.save,
                       snapshot=self.snapshot if self.cfg.snapshots else None, dist=self.dist, stop_after=stop_after)

    def resume(self, trainer: Trainer) -> None:
        state = load_state(self.out, self.model, trainer.optimizer)
        _check_resumable(state["config"], self.cfg)
        trainer.step, trainer.position = state["step"], state["position"]
        trainer.tokens_seen, trainer.wall_s = state["tokens_seen"], state["wall_s"]
        trainer.history = state["history"]
        if trainer.step >= self.total:
            raise ConfigError(f"{self.out}: already at step {trainer.step} of a {self.total}-step budget; "
                              "give a larger budget to continue")
        if self.dist.is_main:
            _rewrite_metrics(self.out / "metrics.jsonl", trainer.history)
        log.info("resumed %s at step %d of %d", self.out, trainer.step, self.total)

    def evaluate(self, m: TinyTransformer, max_tokens: int | None) -> dict[str, Any]:
        was = m.training
        m.eval()
        w = self.val_windows if max_tokens is None else self.val_windows[: max(1, max_tokens // self.n_ctx)]
        dev = next(m.parameters()).device
        res = evaluate_windows(m, w, self.byte_table, device=dev)
        sample = generate(m, self.tokenizer, self.cfg.sample_prompts[0], self.n_ctx, self.cfg.sample_tokens,
                          device=dev) if self.cfg.sample_prompts else ""
        m.train(was)
        return {"val_loss": res.loss, "val_bpb": res.bits_per_byte, "val_tokens": res.tokens, "sample": sample}

    def info(self, trainer: Trainer, final: bool) -> dict[str, Any]:
        cfg, dist = self.cfg, self.dist
        evals = [h for h in trainer.history if "val_bpb" in h]
        return {
            "command": self.command or " ".join(sys.argv),
            "machine": f"{platform.machine()} {platform.processor() or ''} ({torch.get_num_threads()} threads, "
                       f"{cfg.device}, {dist.world} process{'es' if dist.world > 1 else ''})".replace("  ", " "),
            "versions": {"tinyinterp": __version__, "torch": torch.__version__,
                         "transformer_lens": _version("transformer-lens"), "python": platform.python_version()},
            "config": cfg.to_json(), "model_config": self.model_cfg.to_dict(), "n_params": self.model.n_params(),
            "step": trainer.step, "total_steps": self.total, "tokens_seen": trainer.tokens_seen,
            "wall_s": round(trainer.wall_s, 1), "finished": final and trainer.step >= self.total,
            "final_eval": evals[-1] if evals else None,
            "data": {k: self.data.meta[k] for k in ("fingerprint", "tokenizer", "sources", "split", "splits")},
        }

    def export(self, folder: Path, trainer: Trainer, final: bool, samples: bool) -> None:
        meta = self.info(trainer, final)
        if samples:
            meta["samples"] = _card_samples(self.model, self.tokenizer, self.n_ctx)
        save_checkpoint(folder, self.model_cfg.to_dict(), to_hooked_state_dict(self.model, self.ht_buffers),
                        self.tok_dir, meta, card=render_card(folder.name, meta), dtype=getattr(torch, self.cfg.save_dtype))

    def save(self, trainer: Trainer, final: bool) -> None:
        if not self.dist.is_main:
            return
        out = self.out
        state = {"step": trainer.step, "position": trainer.position, "tokens_seen": trainer.tokens_seen,
                 "wall_s": trainer.wall_s, "total_steps": self.total, "config": self.cfg.to_json(),
                 "history": trainer.history}
        try:  # the checkpoint first: should the resume state then fail, --resume redoes these steps
            self.export(out, trainer, final, samples=final)
            save_state(out, self.model, trainer.optimizer, state)
        except OSError as exc:  # full disk, quota, permissions: every write is all-or-nothing
            fix = "rerun with --resume" if has_state(out) else "rerun with --overwrite"
            raise CheckpointError(
                f"{out}: cannot save step {trainer.step} ({exc.strerror or exc}); nothing half-written was kept "
                f"and the last checkpoint loads; free disk space (or fix the cause) and {fix}") from exc

    def snapshot(self, trainer: Trainer) -> None:
        self.export(self.out / "snapshots" / f"step_{trainer.step:07d}", trainer, False, samples=False)


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    now = cfg.to_json()
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if diff and set(diff) <= BUDGET_FIELDS:
        log.warning("resuming with a new budget (%s): the learning-rate schedule is recomputed from here, "
                    "so the run is no longer identical to one trained with either budget", ", ".join(diff))
        return
    if diff:
        raise ConfigError(f"--resume with a different configuration ({', '.join(diff)}); use the original settings or --overwrite")


def _rewrite_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    from tinyinterp.atomic import write_text

    write_text(path, "".join(json.dumps(h) + "\n" for h in history))


def _card_samples(model: TinyTransformer, tokenizer, n_ctx: int) -> list[dict[str, Any]]:
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for prompt in CARD_PROMPTS:
        for temp in (0.0, 0.8):
            text = generate(model, tokenizer, prompt, n_ctx, max_new_tokens=80, temperature=temp, seed=0, device=dev)
            out.append({"prompt": prompt, "temperature": temp, "seed": 0, "text": text})
    model.train()
    return out


def _version(dist_name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist_name)
    except PackageNotFoundError:
        return None
