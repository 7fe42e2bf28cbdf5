"""The exponential moving average of a student's weights (``train.ema_decay``)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class StudentEMA:
    """The exponential moving average of a student's weights and batch-norm statistics: after each step
    ``ema = decay * ema + (1 - decay) * w`` (the first step copies ``w``), integer buffers copied. The update is
    a few ``torch._foreach`` kernels with a host-side step count: torch.optim.swa_utils.AveragedModel reads its
    step count from a tensor and copies it to the device at every update, a host-device synchronisation per step
    on CUDA. ``module`` is the averaged model (evaluated and saved by the engine)."""

    def __init__(self, student: nn.Module, decay: float):
        self.module = copy.deepcopy(student).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.steps = decay, 0

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [*model.parameters(), *model.buffers()]

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        pairs = list(zip(self._tensors(self.module), self._tensors(student), strict=True))
        avg = [(a, w.detach()) for a, w in pairs if a.is_floating_point()]
        if self.steps == 0:
            torch._foreach_copy_([a for a, _ in avg], [w for _, w in avg])
        else:
            torch._foreach_lerp_([a for a, _ in avg], [w for _, w in avg], 1.0 - self.decay)
        for a, w in pairs:
            if not a.is_floating_point():
                a.copy_(w)
        self.steps += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])


__all__ = ["StudentEMA"]
