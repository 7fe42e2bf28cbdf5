"""DGKD: CE + the KD terms towards the teacher and every assistant above the student, with guides dropped at random
in each step (losses/dgkd.py). The guides are the run's ``teacher`` and ``assistants`` (largest first); a ladder of
assistants is trained link by link with :func:`aidkd.takd.run_dgkd` (``aidkd dgkd``).

No official code was found; the loss follows the paper's equation, L = (1 - lambda) CE + lambda sum_g L_KD(g),
with ``ce_weight`` = 1 - lambda and ``kd_weight`` = lambda. The paper's own lambda and temperature on CIFAR-100
are not known to this project: the defaults are this toolkit's KD recipe (0.1 / 0.9, T = 4), so that DGKD and KD
differ only in the guides. ``drop: 1`` is the stochastic DGKD of the paper (one guide left out per step).
"""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field

from ..losses.dgkd import dense_guidance_loss, kept_guides
from .base import Batch, Method, MethodParams, register_method


class DGKDParams(MethodParams):
    ce_weight: float = Field(0.1, ge=0)  # 1 - lambda
    kd_weight: float = Field(0.9, ge=0)  # lambda, on the sum over the guides
    temperature: float = Field(4.0, gt=0)
    drop: int = Field(1, ge=0)  # guides left out per step (at least one always remains); 0: every guide
    kl_reduction: Literal["batchmean", "elementwise_mean"] = "batchmean"  # as kd's (TAKD's quirk on request)


@register_method("dgkd")
class DGKD(Method):
    Params = DGKDParams
    takes_assistants = True

    def forward(self, batch: Batch, epoch: int):
        p: DGKDParams = self.params
        logits = self.student(batch.images)
        guides = [self.teacher, *self.assistants]
        kept = kept_guides(len(guides), p.drop) if self.training else range(len(guides))
        targets = [self.teacher_logits(batch, guides[i]) for i in kept]
        return logits, {"ce": p.ce_weight * F.cross_entropy(logits, batch.labels),
                        "kd": p.kd_weight * dense_guidance_loss(logits, targets, p.temperature, p.kl_reduction)}
