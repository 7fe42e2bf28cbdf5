"""Learning-rate schedules as a per-step multiplier of the base LR (warm-up, then multistep/cosine/...)."""
from __future__ import annotations

import math

from ..config import SchedConfig


def lr_factor(cfg: SchedConfig, epoch_float: float, total_epochs: int, base_lr: float) -> float:
    """Multiplier of the base LR at fractional epoch ``epoch_float`` (0 = start of training)."""
    if cfg.warmup_epochs > 0 and epoch_float < cfg.warmup_epochs:
        warm = (epoch_float + 1e-12) / cfg.warmup_epochs
    else:
        warm = 1.0
    if cfg.name == "constant":
        f = 1.0
    elif cfg.name == "multistep":
        f = cfg.gamma ** sum(1 for m in cfg.milestones if int(epoch_float) >= m)
    elif cfg.name in ("cosine", "onecycle"):
        start = cfg.warmup_epochs if cfg.name == "cosine" else 0.0
        if cfg.name == "onecycle":
            peak = 0.3 * total_epochs
            if epoch_float < peak:
                return max(epoch_float / peak, 0.04)
            start = peak
        t = min(max(epoch_float - start, 0.0) / max(total_epochs - start, 1e-12), 1.0)
        floor = cfg.min_lr / base_lr
        f = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    else:  # pragma: no cover - validated by the config
        raise ValueError(cfg.name)
    return warm * f
