"""Logit MSE distillation (Kim et al., IJCAI 2021): ce_weight CE + mse_weight L_MSE(z^s, z^t), losses/mse.py."""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field

from ..losses.mse import logit_mse_loss
from .base import Batch, Method, MethodParams, register_method


class MSEParams(MethodParams):
    #: the official code trains on the logit loss alone (``--logit l2_logit`` replaces the KD criterion, CE
    #: included), so CE is off by default; the paper's general form is (1 - alpha) CE + alpha L_MSE
    ce_weight: float = Field(0.0, ge=0)
    mse_weight: float = Field(1.0, gt=0)
    #: ``elementwise_mean``: nn.MSELoss() of the official code (over B x C); ``batchmean``: over B only
    reduction: Literal["batchmean", "elementwise_mean"] = "elementwise_mean"


@register_method("mse")
class LogitMSE(Method):
    Params = MSEParams

    def forward(self, batch: Batch, epoch: int):
        p: MSEParams = self.params
        logits = self.student(batch.images)
        t_logits = self.teacher_logits(batch)
        losses = {"ce": p.ce_weight * F.cross_entropy(logits, batch.labels),
                  "mse": p.mse_weight * logit_mse_loss(logits, t_logits.detach(), p.reduction)}
        return logits, losses
