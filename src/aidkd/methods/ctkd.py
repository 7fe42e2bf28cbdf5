"""CTKD: KD or DKD at a learnable global temperature trained adversarially with a curriculum."""
from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..losses.ctkd import ctkd_lambda, global_temperature, gradient_reversal
from ..losses.dkd import dkd_terms, dkd_warmup
from ..losses.kd import kd_loss
from ..losses.lskd import maybe_standardize
from .base import Batch, Method, MethodParams, register_method

# published loss weights per base (CTKD's run_cifar_distill.sh): KD "-r 0.1 -a 0.9", DKD "-r 1 -a 0 -b 1"
_PUBLISHED = {"kd": {"ce_weight": 0.1, "kd_weight": 0.9}, "dkd": {"ce_weight": 1.0, "kd_weight": 1.0}}


class CTKDParams(MethodParams):
    base: Literal["kd", "dkd"] = "kd"
    ce_weight: Optional[float] = Field(None, ge=0)  # None: 0.1 for kd, 1.0 for dkd
    kd_weight: Optional[float] = Field(None, ge=0)  # None: 0.9 for kd, 1.0 for dkd
    t_start: float = Field(1.0, gt=0)
    t_end: float = Field(20.0, ge=0)  # tau = t_start + t_end * sigmoid(theta)
    theta_init: float = 1.0
    curriculum_epochs: int = Field(10, ge=0)  # cosine rise of the reversal strength
    lambda_max: float = Field(1.0, ge=0)
    dkd_alpha: float = Field(1.0, ge=0)
    dkd_beta: float = Field(2.0, ge=0)
    dkd_warmup_epochs: int = Field(0, ge=0)  # CTKD's DKD copy has no warm-up
    logit_standardization: bool = False


@register_method("ctkd")
class CTKD(Method):
    Params = CTKDParams

    def __init__(self, student, teacher, params: CTKDParams, ctx):
        super().__init__(student, teacher, params, ctx)
        published = _PUBLISHED[params.base]
        self.ce_weight = published["ce_weight"] if params.ce_weight is None else params.ce_weight
        self.kd_weight = published["kd_weight"] if params.kd_weight is None else params.kd_weight
        #: the raw temperature parameter; trained with the student by the engine's optimiser
        self.theta = nn.Parameter(torch.tensor(float(params.theta_init)))

    @property
    def temperature(self) -> float:
        """The current temperature (for logging)."""
        return float(global_temperature(self.theta.detach(), self.params.t_start, self.params.t_end))

    def forward(self, batch: Batch, epoch: int):
        p: CTKDParams = self.params
        logits = self.student(batch.images)
        t_logits = self.teacher_logits(batch)
        strength = ctkd_lambda(epoch, p.curriculum_epochs, p.lambda_max)
        tau = global_temperature(gradient_reversal(self.theta, strength), p.t_start, p.t_end)
        zs = maybe_standardize(logits, p.logit_standardization)
        zt = maybe_standardize(t_logits, p.logit_standardization)
        losses = {"ce": self.ce_weight * F.cross_entropy(logits, batch.labels)}
        if p.base == "kd":
            losses["kd"] = self.kd_weight * kd_loss(zs, zt, tau)
        else:
            tckd, nckd = dkd_terms(zs, zt, batch.labels, tau)
            w = self.kd_weight * dkd_warmup(epoch, p.dkd_warmup_epochs)
            losses["tckd"] = w * p.dkd_alpha * tckd
            losses["nckd"] = w * p.dkd_beta * nckd
        return logits, losses
