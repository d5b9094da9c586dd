"""The training loop. Data, evaluation and saving are injected, so the loop stays small.

The loop is a pure function of (config, initial weights, sampler, step): stopping at
step k and resuming from ``<out>/resume`` reproduces the uninterrupted run bit for bit
on CPU (a test checks this).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from tinyinterp.data.batches import WindowSampler
from tinyinterp.training.config import TrainConfig
from tinyinterp.training.distributed import DistInfo, all_reduce_mean
from tinyinterp.training.schedule import log_spaced_steps, lr_at

log = logging.getLogger(__name__)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices except embeddings, none on biases and LayerNorm."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.startswith(("wte", "wpe")) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=True)


@dataclass
class Trainer:
    cfg: TrainConfig
    model: torch.nn.Module  # TinyTransformer
    sampler: WindowSampler
    total_steps: int
    out: Path | None  # None: keep metrics in memory only (benchmarks)
    evaluate: Callable[[torch.nn.Module, int | None], dict[str, Any]] | None = None
    """(model, max_tokens) → metrics dict; called every ``eval_every`` steps and at the end."""
    save: Callable[["Trainer", bool], None] | None = None
    """(trainer, final) → writes resume state and the exported checkpoint."""
    snapshot: Callable[["Trainer"], None] | None = None
    """(trainer) → writes a model-only snapshot for training dynamics."""
    dist: DistInfo = field(default_factory=DistInfo)
    step: int = 0
    position: int = 0  # global samples consumed
    tokens_seen: int = 0
    wall_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_after: int | None = None  # stop early at this step (tests, crash simulation)

    def __post_init__(self):
        self.device = torch.device(self.cfg.device if not self.cfg.device.startswith("cuda") or not self.dist.enabled
                                   else f"cuda:{self.dist.local_rank}")
        self.model.to(self.device)
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.ddp = DistributedDataParallel(self.model) if self.dist.enabled else None
        self.net = self.ddp or self.model
        if self.cfg.compile:
            self.net = torch.compile(self.net)
        self.snapshot_steps = set(log_spaced_steps(self.total_steps, self.cfg.snapshots))
        self.metrics_path = self.out / "metrics.jsonl" if self.out is not None else None

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.dist.world

    def _autocast(self):
        if self.cfg.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _evaluate(self, max_tokens: int | None, bar, unless_tokens: int | None = None) -> dict[str, Any]:
        """Evaluate on the first ``max_tokens`` validation tokens (None: all) and log it, unless it read
        ``unless_tokens`` tokens (the same set as the evaluation just logged)."""
        metrics = self.evaluate(self.model, max_tokens)
        if metrics["val_tokens"] != unless_tokens:
            self._log({"step": self.step, "tokens": self.tokens_seen, **metrics})
            bar.write(f"step {self.step}: val loss {metrics['val_loss']:.4f} nats/token, {metrics['val_bpb']:.4f} "
                      f"bits/byte on {metrics['val_tokens']:,} tokens")
        return metrics

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.dist.is_main and self.metrics_path is not None:
            with open(self.metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    def train_step(self) -> tuple[float, float]:
        cfg = self.cfg
        lr = lr_at(self.step, cfg.lr, cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.net.train()
        total = 0.0
        local = cfg.batch_size
        for micro in range(cfg.grad_accum):
            start = self.position + (micro * self.dist.world + self.dist.rank) * local
            batch = self.sampler.batch(start, local).to(self.device, non_blocking=True)
            sync = micro == cfg.grad_accum - 1 or self.ddp is None
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()
            with ctx, self._autocast():
                logits = self.net(batch[:, :-1])
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
                (loss / cfg.grad_accum).backward()
            total += loss.detach()
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)
                     if cfg.grad_clip > 0 else torch.tensor(0.0))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.position += self.global_batch
        self.tokens_seen += self.global_batch * self.sampler.n_ctx
        return total / cfg.grad_accum, grad_norm

    def run(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        bar = tqdm(total=self.total_steps, initial=self.step, desc="training", unit="step",
                   disable=not self.dist.is_main, dynamic_ncols=True)
        t_last, tok_last = time.perf_counter(), self.tokens_seen
        t_prev = time.perf_counter()
        try:
            while self.step < self.total_steps:
                loss, grad_norm = self.train_step()
                now = time.perf_counter()
                self.wall_s += now - t_prev
                t_prev = now
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    loss_v = float(all_reduce_mean(loss.detach().reshape(1), self.dist))
                    if not math.isfinite(loss_v):
                        raise FloatingPointError(f"training loss became {loss_v} at step {self.step}; lower --lr or raise --warmup-steps")
                    tps = (self.tokens_seen - tok_last) / max(1e-9, now - t_last)
                    t_last, tok_last = now, self.tokens_seen
                    lr = self.optimizer.param_groups[0]["lr"]
                    self._log({"step": self.step, "tokens": self.tokens_seen, "epoch": round(self.sampler.epoch_of(self.position), 4),
                               "train_loss": loss_v, "lr": lr, "grad_norm": float(grad_norm), "tokens_per_s": tps,
                               "wall_s": round(self.wall_s, 2)})
                    bar.set_postfix(loss=f"{loss_v:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
                final = self.step == self.total_steps
                if self.evaluate and self.dist.is_main and (self.step % cfg.eval_every == 0 or final):
                    # Every evaluation reads the same first eval_tokens, so the curve compares like with like; at
                    # the end the whole split is read once more (a record with a larger val_tokens) if it is larger.
                    metrics = self._evaluate(cfg.eval_tokens, bar)
                    if final and cfg.eval_tokens is not None:
                        self._evaluate(None, bar, unless_tokens=metrics["val_tokens"])
                if self.snapshot and self.dist.is_main and self.step in self.snapshot_steps:
                    self.snapshot(self)
                if self.save and (self.step % cfg.save_every == 0 or final):
                    self.save(self, final)
                t_prev = time.perf_counter()  # exclude eval/save time from training wall time
                if self.stop_after is not None and self.step >= self.stop_after:
                    break
        finally:  # end the progress bar's line, so an error message starts on its own line
            bar.close()
        return self.history
