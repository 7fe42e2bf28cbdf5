"""Hinton KD, with AID's component ablation, LSKD's logit standardisation and TAKD's KL reduction as options."""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field

from ..losses.decomposition import kd_decomposition
from ..losses.kd import kd_loss
from ..losses.lskd import maybe_standardize
from .base import Batch, Method, MethodParams, register_method


class KDParams(MethodParams):
    ce_weight: float = Field(0.1, ge=0)
    kd_weight: float = Field(0.9, ge=0)
    temperature: float = Field(4.0, gt=0)
    #: AID component ablation: the KL term becomes cs_weight * L_CS + ic_weight * L_IC (1/1 is plain KD)
    cs_weight: float = Field(1.0, ge=0)
    ic_weight: float = Field(1.0, ge=0)
    #: LSKD: z-score both models' logits; ``temperature`` is then the base temperature T_b (published: 2, with
    #: kd_weight 9)
    logit_standardization: bool = False
    #: "elementwise_mean" divides the KL by B*C instead of B: TAKD's official nn.KLDivLoss() default
    kl_reduction: Literal["batchmean", "elementwise_mean"] = "batchmean"


@register_method("kd")
class KD(Method):
    Params = KDParams

    def forward(self, batch: Batch, epoch: int):
        p: KDParams = self.params
        logits = self.student(batch.images)
        t_logits = self.teacher_logits(batch)
        losses = {"ce": p.ce_weight * F.cross_entropy(logits, batch.labels)}
        zs = maybe_standardize(logits, p.logit_standardization)
        zt = maybe_standardize(t_logits, p.logit_standardization)
        if p.cs_weight == 1.0 and p.ic_weight == 1.0:
            losses["kd"] = p.kd_weight * kd_loss(zs, zt, p.temperature, p.kl_reduction)
        else:
            parts = kd_decomposition(student_logits=zs, teacher_logits=zt, labels=batch.labels,
                                     temperature=p.temperature)
            scale = p.kd_weight / (logits.shape[1] if p.kl_reduction == "elementwise_mean" else 1)
            losses["kd_cs"] = scale * p.cs_weight * parts.cs
            losses["kd_ic"] = scale * p.ic_weight * parts.ic
        return logits, losses
