"""Attention transfer on every stage (mdistiller's settings)."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from ..losses.at import at_loss
from .base import Batch, FeatureMethod, MethodParams, register_method


class ATParams(MethodParams):
    ce_weight: float = Field(1.0, ge=0)
    feat_weight: float = Field(1000.0, ge=0)
    p: float = Field(2.0, gt=0)


@register_method("at")
class AT(FeatureMethod):
    Params = ATParams

    def __init__(self, student, teacher, params: ATParams, ctx):
        super().__init__(student, teacher, params, ctx)
        self.paired_stage_shapes("feats", "feats")

    def forward(self, batch: Batch, epoch: int):
        p: ATParams = self.params
        out = self.student.forward_with_features(batch.images)
        t_feats = self.teacher_features(batch.images).feats
        return out.logits, {
            "ce": p.ce_weight * F.cross_entropy(out.logits, batch.labels),
            "at": p.feat_weight * at_loss(out.feats[1:], t_feats[1:], p.p),
        }
