"""SimKD: the student's last feature map projected onto the teacher's, an L2 loss, and the teacher's classifier
reused at inference (losses/simkd.py; the official CIFAR settings: ``-c 0 -d 0 -b 1 -f 2``, the feature loss
alone).

The method replaces its student by the deployed one (:class:`~aidkd.models.reused_head.ReusedHeadStudent`:
backbone + projector + the teacher's frozen classifier), so that training accuracy, evaluation, the EMA,
checkpoints and export all see the model that is deployed; :meth:`SimKD.deployed_model` names it in checkpoints.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from ..errors import UserError
from ..losses.simkd import align_spatial, simkd_loss
from ..models.reused_head import ReusedHeadStudent
from .base import Batch, FeatureMethod, MethodParams, model_label, register_method


class SimKDParams(MethodParams):
    feat_weight: float = Field(1.0, gt=0)  # -b 1
    factor: int = Field(2, ge=1)  # the projector's bottleneck: C_t / factor channels (-f 2; the paper also 4, 8)


@register_method("simkd")
class SimKD(FeatureMethod):
    Params = SimKDParams

    def __init__(self, student, teacher, params: SimKDParams, ctx):
        super().__init__(student, teacher, params, ctx)
        s_c, s_h, _ = self.stage_shapes("student")[-1]
        t_c, t_h, _ = self.stage_shapes("teacher")[-1]
        t_model = self.teacher.model
        head = t_model.get_classifier() if hasattr(t_model, "get_classifier") else None
        if not isinstance(head, nn.Linear) or head.in_features != t_c or self.pooled_dim("teacher") != t_c:
            raise UserError(f"method 'simkd' reuses the teacher's classifier on its pooled last stage map: the teacher "
                            f"{model_label(t_model)}'s classifier must be a linear layer reading the {t_c} channels of "
                            "its last stage; choose a teacher whose classifier follows its last stage directly")
        deployed = ReusedHeadStudent(student, s_c, t_c, ctx.num_classes, params.factor, t_h if s_h > t_h else None)
        with torch.no_grad():
            deployed.head.weight.copy_(head.weight)
            deployed.head.bias.copy_(head.bias)
        deployed.head.requires_grad_(False)
        self._arch = {"student_channels": s_c, "teacher_channels": t_c, "factor": params.factor,
                      "teacher_hw": deployed.teacher_hw}
        self.student = deployed

    def deployed_model(self, name: str, kwargs: dict) -> tuple[str, dict]:
        return "simkd_student", {"backbone": name, "backbone_kwargs": dict(kwargs), **self._arch}

    def forward(self, batch: Batch, epoch: int):
        _, projected = self.student.project(batch.images)
        t_map = self.teacher_features(batch.images).feats[-1]
        projected, t_map = align_spatial(projected, t_map)
        logits = self.student.head(projected.mean((2, 3)))
        return logits, {"simkd": self.params.feat_weight * simkd_loss(projected, t_map)}
