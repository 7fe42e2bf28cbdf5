"""Attention transfer on every stage (mdistiller's settings)."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from ..errors import UserError
from ..losses.at import at_loss
from .base import METHODS, Batch, Method, MethodParams
from .fitnet import feature_info, model_label, stage_shapes


class ATParams(MethodParams):
    ce_weight: float = Field(1.0, ge=0)
    feat_weight: float = Field(1000.0, ge=0)
    p: float = Field(2.0, gt=0)


@METHODS.register("at")
class AT(Method):
    registered_name = "at"
    Params = ATParams
    teacher_model_needed = "needs the teacher's features"

    def __init__(self, student, teacher, params: ATParams, ctx):
        super().__init__(student, teacher, params, ctx)
        name = self.method_name()
        s = stage_shapes(name, "student", student, feature_info(name, "student", student, ctx)["feats"])
        t = stage_shapes(name, "teacher", teacher, feature_info(name, "teacher", teacher, ctx)["feats"])
        if len(s) != len(t):
            raise UserError(
                f"method {name!r}: the student {model_label(student)} has {len(s)} stages and the teacher "
                f"{model_label(teacher)} {len(t)}; attention transfer pairs stages one to one"
            )

    def forward(self, batch: Batch, epoch: int):
        p: ATParams = self.params
        out = self.student.forward_features(batch.images)
        t_feats = self.teacher_features(batch.images).feats
        return out.logits, {
            "ce": p.ce_weight * F.cross_entropy(out.logits, batch.labels),
            "at": p.feat_weight * at_loss(out.feats[1:], t_feats[1:], p.p),
        }
