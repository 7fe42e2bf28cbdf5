"""DIST (relation-based logit distillation) with the official CIFAR settings."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from ..losses.dist import dist_terms
from .base import Batch, Method, MethodParams, register_method


class DISTParams(MethodParams):
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(2.0, ge=0)  # the config's loss weight; the paper's beta = gamma = 2
    beta: float = Field(1.0, ge=0)  # inter-class relation
    gamma: float = Field(1.0, ge=0)  # intra-class relation
    tau: float = Field(4.0, gt=0)  # CIFAR "dist_t4"; ImageNet uses 1. The tau^2 factor is part of the loss


@register_method("dist")
class DIST(Method):
    Params = DISTParams

    def forward(self, batch: Batch, epoch: int):
        p: DISTParams = self.params
        logits = self.student(batch.images)
        inter, intra = dist_terms(logits, self.teacher_logits(batch), p.tau)
        return logits, {
            "ce": p.ce_weight * F.cross_entropy(logits, batch.labels),
            "dist_inter": p.kd_weight * p.beta * inter,
            "dist_intra": p.kd_weight * p.gamma * intra,
        }
