"""AID's projected targets as a teacher (``teacher.kind: targets``): fixed per-sample target distributions p*
(written by the projection adaptation, :mod:`aidkd.aid.project`), served as the logits tau * log p*[index], so
that softmax(logits / tau) = p*. They belong to the training split they were projected on: the teacher serves
that split only (no features, no other images), so it teaches logit-based methods (KD, DKD, DIST, CTKD, ...)."""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ..errors import UserError
from ..files.checkpoint import read_checkpoint, save_checkpoint
from .base import TableTeacher


class TargetTeacher(TableTeacher):
    """``log_targets`` (num_samples, num_classes): log p* per training sample; ``temperature``: tau."""

    source = "AID projection targets"

    def __init__(self, log_targets: Tensor, temperature: float, meta: dict | None = None):
        super().__init__()
        # far-off classes may underflow to -inf: keep the logits finite so that KL terms never see inf - inf
        self.register_buffer("log_targets", log_targets.detach().float().clamp_min(-1e4))
        self.temperature = float(temperature)
        self.meta = dict(meta or {})

    @property
    def table(self) -> Tensor:
        return self.log_targets

    def logits_at(self, index: Tensor) -> Tensor:
        return self.temperature * self.log_targets[index.to(self.log_targets.device)]

    def save(self, path: str | Path) -> None:
        """Write the targets atomically."""
        save_checkpoint({"log_targets": self.log_targets.cpu(), "temperature": self.temperature, "meta": self.meta},
                        path)

    @staticmethod
    def is_targets_file(obj) -> bool:
        """Whether a read checkpoint object is a targets file."""
        return isinstance(obj, dict) and "log_targets" in obj and "temperature" in obj

    @classmethod
    def load(cls, path: str | Path) -> "TargetTeacher":
        state = read_checkpoint(path)
        if not cls.is_targets_file(state):
            raise UserError(f"{str(path)!r} is not a projection teacher (no per-sample targets in it)")
        return cls(state["log_targets"], state["temperature"], state.get("meta"))


__all__ = ["TargetTeacher"]
