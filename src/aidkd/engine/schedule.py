"""Learning-rate schedules as a per-step multiplier of the base LR (warm-up, then multistep/cosine/...)."""
from __future__ import annotations

import math

from ..config import SchedConfig


def cosine_decay(progress: float, floor: float = 0.0) -> float:
    """The cosine multiplier at ``progress`` in [0, 1] (clipped): 1 at the start, ``floor`` at the end."""
    t = min(max(progress, 0.0), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


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
        f = cosine_decay((epoch_float - start) / max(total_epochs - start, 1e-12), cfg.min_lr / base_lr)
    else:  # pragma: no cover - validated by the config
        raise ValueError(cfg.name)
    return warm * f
