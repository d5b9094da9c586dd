"""Learning-rate schedule: linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""

from __future__ import annotations

import math


def lr_at(step: int, lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if total <= warmup:
        return lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def log_spaced_steps(total: int, n: int, first: int = 1) -> list[int]:
    """``n`` distinct steps spaced evenly in log(step) from ``first`` to ``total`` (inclusive)."""
    if n <= 0:
        return []
    if n == 1 or total <= first:
        return [total]
    out = sorted({round(first * (total / first) ** (i / (n - 1))) for i in range(n)})
    return [max(first, min(total, s)) for s in out]
