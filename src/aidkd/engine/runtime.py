"""Where and how a run computes: the device, the seeds, the autocast precision, the library versions it records."""
from __future__ import annotations

import platform
import random
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
import torchvision

from ..config import RunConfig
from ..errors import UserError
from .precision import resolve_precision


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA where there is one, else the CPU; ``cuda`` without a GPU is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device={name} but no CUDA device is available; use train.device=cpu")
    return torch.device(name)


def amp_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """The run's autocast dtype (None: fp32): ``train.amp`` resolved by :func:`~aidkd.engine.precision.resolve_precision`."""
    return resolve_precision(cfg.train.amp, device).dtype


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _aidkd_version() -> str:
    try:
        return version("aidkd")
    except PackageNotFoundError:  # the source tree on the path, not installed
        return "unknown"


def versions() -> dict:
    return {"aidkd": _aidkd_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


__all__ = ["amp_dtype", "resolve_device", "seed_everything", "versions"]
