"""``train()``: corpus → tokenizer → token shards → TinyTransformer → HookedTransformer checkpoint."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

import tinyinterp
from tinyinterp.checkpoint import CONFIG, hooked_config, save_checkpoint, sha256_file
from tinyinterp.data.batches import WindowSampler, eval_windows
from tinyinterp.data.readers import iter_stories, resolve_sources
from tinyinterp.data.shards import PreparedData, prepare_data
from tinyinterp.data.tokenizer import load_tokenizer, token_byte_lengths, train_bpe
from tinyinterp.errors import CheckpointError, ConfigError
from tinyinterp.evaluate import evaluate_windows
from tinyinterp.generate import generate
from tinyinterp.models.convert import to_hooked_state_dict
from tinyinterp.models.presets import preset_config
from tinyinterp.models.transformer import TinyTransformer
from tinyinterp.training.card import render_card
from tinyinterp.training.config import TrainConfig
from tinyinterp.training.distributed import barrier, check_same, init_distributed, shutdown
from tinyinterp.training.state import RESUME, has_state, load_state, save_state
from tinyinterp.training.trainer import Trainer

log = logging.getLogger(__name__)
CARD_PROMPTS = ["Once upon a time", "Lily and Tom went to", "The little dog was"]
# fields that may change between a run and its resumption without breaking determinism
RESUMABLE_CHANGES = {"eval_every", "log_every", "save_every", "eval_tokens", "sample_prompts", "sample_tokens", "threads"}
# a new budget is allowed too: the cosine schedule is then recomputed for the new total
BUDGET_FIELDS = {"max_steps", "max_tokens", "epochs"}


def _tokenizer_for(cfg: TrainConfig, main: bool) -> Path:
    if cfg.tokenizer:
        load_tokenizer(cfg.tokenizer)  # validates
        return Path(cfg.tokenizer)
    from tinyinterp.cache import cache_dir

    srcs = resolve_sources(cfg.data)
    key = hashlib.sha256(json.dumps([[s.sha256 or s.path for s in srcs], cfg.vocab_size, cfg.dedupe]).encode()).hexdigest()[:16]
    path = cache_dir("tokenizers") / key
    if main and not (path / "tokenizer.json").exists():
        log.info("training a %d-id byte-level BPE on the training data", cfg.vocab_size)
        train_bpe(iter_stories(srcs, dedupe=cfg.dedupe), path, vocab_size=cfg.vocab_size,
                  corpus_name=", ".join(s.path for s in srcs))
    return path


def _check_out(out: Path, overwrite: bool, resume: bool) -> bool:
    """Validate ``--out``; True when an old run there is to be cleared (see :func:`_clear_old_run`)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file, not a folder; choose another --out")
    holds = out.exists() and ((out / CONFIG).exists() or (out / RESUME).exists() or (out / "metrics.jsonl").exists())
    if resume:
        if not has_state(out):
            raise ConfigError(f"{out}: --resume given but there is no resumable state ({RESUME}/); start without --resume")
        return False
    if holds and not overwrite:
        raise ConfigError(f"{out}: already holds a checkpoint; pass --resume to continue it or --overwrite to replace it")
    return holds


def _clear_old_run(out: Path) -> None:
    """Remove an old run's logs, resume state and snapshots (--overwrite), once the new run's data is ready;
    its checkpoint files are replaced by the first save."""
    for name in ("metrics.jsonl", RESUME, RESUME + ".old", "snapshots"):
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

    ``stop_after`` stops (after saving) at that step, as a crash would: used by tests.
    """
    out = Path(out)
    dist = init_distributed(cfg.device)
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        clear = _check_out(out, overwrite, resume) if dist.is_main else False
        tok_dir = _tokenizer_for(cfg, dist.local_rank == 0)  # once per machine: caches are per machine
        if dist.is_main:
            data_dir = prepare_data(cfg.data, tok_dir, eval_sources=cfg.eval_data or None,
                                    val_fraction=cfg.val_fraction, dedupe=cfg.dedupe)
            # only now, with the data ready, touch --out: a bad corpus leaves it as it was (or absent)
            if clear:
                _clear_old_run(out)
            out.mkdir(parents=True, exist_ok=True)
        barrier(dist)
        if not dist.is_main:
            data_dir = prepare_data(cfg.data, tok_dir, eval_sources=cfg.eval_data or None,
                                    val_fraction=cfg.val_fraction, dedupe=cfg.dedupe)
        data = PreparedData.open(data_dir)
        tokenizer = load_tokenizer(tok_dir)
        check_same(f"{sha256_file(tok_dir / 'tokenizer.json')}:{data.n_tokens('train')}:{data.n_tokens('val')}",
                   "tokenizer or training data", dist)
        model_cfg = preset_config(cfg.preset, d_vocab=len(tokenizer), **cfg.model_overrides)
        hooked_config(model_cfg)  # validate against TransformerLens early
        torch.manual_seed(cfg.seed)
        model = TinyTransformer(model_cfg, dropout=cfg.dropout)
        sampler = WindowSampler(data.tokens("train"), model_cfg["n_ctx"], cfg.seed)
        global_batch = cfg.batch_size * cfg.grad_accum * dist.world
        total = _total_steps(cfg, data.n_tokens("train"), global_batch, model_cfg["n_ctx"])
        byte_table = token_byte_lengths(tokenizer)
        val_windows = eval_windows(data.tokens("val"), model_cfg["n_ctx"])
        if len(val_windows) == 0 and dist.is_main:
            log.warning("the validation split is empty: no evaluation during training; pass --eval FILES or raise --val-fraction")

        def evaluate(m: TinyTransformer, max_tokens: int | None) -> dict[str, Any]:
            was = m.training
            m.eval()
            w = val_windows if max_tokens is None else val_windows[: max(1, max_tokens // model_cfg["n_ctx"])]
            res = evaluate_windows(m, w, byte_table, device=next(m.parameters()).device)
            sample = generate(m, tokenizer, cfg.sample_prompts[0], model_cfg["n_ctx"], cfg.sample_tokens,
                              device=next(m.parameters()).device) if cfg.sample_prompts else ""
            m.train(was)
            return {"val_loss": res.loss, "val_bpb": res.bits_per_byte, "val_tokens": res.tokens, "sample": sample}

        def info(trainer: Trainer, final: bool) -> dict[str, Any]:
            evals = [h for h in trainer.history if "val_bpb" in h]
            return {
                "command": command or " ".join(sys.argv),
                "machine": f"{platform.machine()} {platform.processor() or ''} ({torch.get_num_threads()} threads, "
                           f"{cfg.device}, {dist.world} process{'es' if dist.world > 1 else ''})".replace("  ", " "),
                "versions": {"tinyinterp": tinyinterp.__version__, "torch": torch.__version__,
                             "transformer_lens": _version("transformer-lens"), "python": platform.python_version()},
                "config": cfg.to_json(), "model_config": model_cfg, "n_params": model.n_params(),
                "step": trainer.step, "total_steps": total, "tokens_seen": trainer.tokens_seen,
                "wall_s": round(trainer.wall_s, 1), "finished": final and trainer.step >= total,
                "final_eval": evals[-1] if evals else None,
                "data": {k: data.meta[k] for k in ("fingerprint", "tokenizer", "sources", "split", "splits")},
            }

        from transformer_lens import HookedTransformer

        with torch.random.fork_rng(devices=[]):  # building it must not move the training RNG
            ht_buffers = HookedTransformer(hooked_config(model_cfg), move_to_device=False).state_dict()

        def export(folder: Path, trainer: Trainer, final: bool, samples: bool) -> None:
            meta = info(trainer, final)
            if samples:
                meta["samples"] = _card_samples(model, tokenizer, model_cfg["n_ctx"])
            save_checkpoint(folder, model_cfg, to_hooked_state_dict(model, ht_buffers), tok_dir, meta,
                            card=render_card(folder.name, meta), dtype=getattr(torch, cfg.save_dtype))

        def save(trainer: Trainer, final: bool) -> None:
            if not dist.is_main:
                return
            state = {"step": trainer.step, "position": trainer.position, "tokens_seen": trainer.tokens_seen,
                     "wall_s": trainer.wall_s, "total_steps": total, "config": cfg.to_json(), "history": trainer.history}
            try:  # the checkpoint first: should the resume state then fail, --resume redoes these steps
                export(out, trainer, final, samples=final)
                save_state(out, model, trainer.optimizer, state)
            except OSError as exc:  # full disk, quota, permissions: every write is all-or-nothing
                fix = "rerun with --resume" if has_state(out) else "rerun with --overwrite"
                raise CheckpointError(
                    f"{out}: cannot save step {trainer.step} ({exc.strerror or exc}); nothing half-written was kept "
                    f"and the last checkpoint loads; free disk space (or fix the cause) and {fix}") from exc

        def snapshot(trainer: Trainer) -> None:
            export(out / "snapshots" / f"step_{trainer.step:07d}", trainer, False, samples=False)

        trainer = Trainer(cfg, model, sampler, total, out, evaluate=evaluate if len(val_windows) else None, save=save,
                          snapshot=snapshot if cfg.snapshots else None, dist=dist, stop_after=stop_after)
        if resume:
            state = load_state(out, model, trainer.optimizer)
            _check_resumable(state["config"], cfg)
            trainer.step, trainer.position = state["step"], state["position"]
            trainer.tokens_seen, trainer.wall_s = state["tokens_seen"], state["wall_s"]
            trainer.history = state["history"]
            if trainer.step >= total:
                raise ConfigError(f"{out}: already at step {trainer.step} of a {total}-step budget; give a larger budget to continue")
            if dist.is_main:
                _rewrite_metrics(out / "metrics.jsonl", trainer.history)
            log.info("resumed %s at step %d of %d", out, trainer.step, total)
        elif dist.is_main:
            (out / "metrics.jsonl").write_text("")
        trainer.run()
        barrier(dist)  # let rank 0 finish its final save before anyone tears the group down
        return out
    finally:
        shutdown(dist)


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
