"""Cross-entropy only: teachers and vanilla students."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from .base import Batch, Method, MethodParams, register_method


class VanillaParams(MethodParams):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


@register_method("vanilla")
class Vanilla(Method):
    Params = VanillaParams
    needs_teacher = False

    def forward(self, batch: Batch, epoch: int):
        logits = self.student(batch.images)
        return logits, {"ce": F.cross_entropy(logits, batch.labels, label_smoothing=self.params.label_smoothing)}
