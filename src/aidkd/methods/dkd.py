"""Decoupled KD (mdistiller's settings), with LSKD's logit standardisation as an option."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from ..losses.dkd import dkd_terms, dkd_warmup
from ..losses.lskd import maybe_standardize
from .base import Batch, Method, MethodParams, register_method


class DKDParams(MethodParams):
    ce_weight: float = Field(1.0, ge=0)
    alpha: float = Field(1.0, ge=0)  # TCKD weight
    beta: float = Field(8.0, ge=0)  # NCKD weight: 8 (mdistiller default), 2 or 6 depending on the pair
    temperature: float = Field(4.0, gt=0)
    #: linear warm-up of the DKD term over this many epochs (mdistiller counts epochs from 1); 0 = none
    warmup_epochs: int = Field(20, ge=0)
    #: multiplies alpha and beta (LSKD writes its DKD+LS settings as a KD weight times alpha/beta)
    kd_weight: float = Field(1.0, ge=0)
    logit_standardization: bool = False


@register_method("dkd")
class DKD(Method):
    Params = DKDParams

    def forward(self, batch: Batch, epoch: int):
        p: DKDParams = self.params
        logits = self.student(batch.images)
        t_logits = self.teacher_logits(batch)
        zs = maybe_standardize(logits, p.logit_standardization)
        zt = maybe_standardize(t_logits, p.logit_standardization)
        tckd, nckd = dkd_terms(zs, zt, batch.labels, p.temperature)
        w = dkd_warmup(epoch, p.warmup_epochs) * p.kd_weight
        return logits, {
            "ce": p.ce_weight * F.cross_entropy(logits, batch.labels),
            "tckd": w * p.alpha * tckd,
            "nckd": w * p.beta * nckd,
        }
