"""Learning-rate rules: linear scaling by effective batch, linear warmup, cosine decay."""

from __future__ import annotations

import math


def scaled_lr(base_lr: float, effective_batch: int, batch_base: int) -> float:
    """The MAE rule: ``lr = base_lr * effective_batch / batch_base``."""
    return base_lr * effective_batch / batch_base


def scaled_floor(min_lr: float, base_lr: float, peak: float) -> float:
    """The cosine's floor: ``train.min_lr`` is on ``base_lr``'s scale, so it grows with the
    effective batch as the peak does (``min_lr * peak / base_lr``); MAE's min_lr is absolute."""
    return min_lr * peak / max(base_lr, 1e-30)


def lr_at(step: int, peak: float, total: int, warmup: int, floor: float = 0.0) -> float:
    """Per-iteration schedule: linear warmup to ``peak``, then cosine down to ``floor``."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
