"""The student SimKD deploys: its own backbone, a projector to the teacher's channels, and the teacher's classifier.

``simkd_student`` is built from the backbone's architecture (``backbone``, ``backbone_kwargs``), the teacher's
last-stage channels (``teacher_channels``, which its classifier reads after pooling), the projector's bottleneck
``factor`` and the teacher's last-stage side ``teacher_hw`` (a larger student map is average-pooled to it first, as
in training). The classifier is a plain linear layer: SimKD fills it with the teacher's weights and freezes it; a
checkpoint of the deployed student holds all three parts, so evaluation and export need no teacher. The backbone's
own classifier is kept (it runs, and its output is unused) so that the backbone stays the zoo's model.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..losses.simkd import SimKDProjector
from .base import Features, KDModel, num_params
from .imagenet import build_external
from .registry import MODELS, check_kwargs, register_model


class ReusedHeadStudent(KDModel):
    def __init__(self, backbone: KDModel, student_channels: int, teacher_channels: int, num_classes: int,
                 factor: int = 2, teacher_hw: int | None = None):
        super().__init__()
        self.input_size = tuple(backbone.input_size)
        self.backbone = backbone
        self.projector = SimKDProjector(student_channels, teacher_channels, factor)
        self.head = nn.Linear(teacher_channels, num_classes)
        self.teacher_hw = teacher_hw

    def project(self, x: Tensor) -> tuple[Features, Tensor]:
        """The backbone's features and its last stage map projected to the teacher's channels (pooled first to the
        teacher's side where the student's is larger)."""
        out = self.backbone.forward_with_features(x)
        last = out.feats[-1]
        if self.teacher_hw is not None and last.shape[2] > self.teacher_hw:
            last = F.adaptive_avg_pool2d(last, (self.teacher_hw, self.teacher_hw))
        return out, self.projector(last)

    def forward_with_features(self, x: Tensor) -> Features:
        out, projected = self.project(x)
        pooled = projected.mean((2, 3))
        return Features(self.head(pooled), out.feats + [projected], out.preact_feats + [projected], pooled)

    def get_classifier(self) -> nn.Module:
        return self.head

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part: the backbone (its unused classifier apart), the projector, the teacher's head."""
        own_head = num_params(self.backbone.get_classifier())
        return {"backbone": num_params(self.backbone) - own_head, "backbone_unused_classifier": own_head,
                "projector": num_params(self.projector), "teacher_classifier": num_params(self.head)}


@register_model("simkd_student", family="composite")
def simkd_student(num_classes=100, in_chans=3, input_hw=32, backbone=None, backbone_kwargs=None,
                  student_channels=None, teacher_channels=None, factor=2, teacher_hw=None, **kw):
    check_kwargs("simkd_student", kw, ["backbone", "backbone_kwargs", "student_channels", "teacher_channels",
                                       "factor", "teacher_hw"])
    if not backbone or not student_channels or not teacher_channels:
        raise TypeError("simkd_student needs backbone, student_channels and teacher_channels")
    kwargs = {"input_hw": input_hw, **dict(backbone_kwargs or {})}
    if backbone.startswith(("tv:", "timm:")):
        net = build_external(backbone, num_classes, in_chans, **kwargs)
    else:
        net = MODELS.get(backbone)(num_classes=num_classes, in_chans=in_chans, **kwargs)
    net.arch = backbone
    return ReusedHeadStudent(net, student_channels, teacher_channels, num_classes, factor, teacher_hw)
