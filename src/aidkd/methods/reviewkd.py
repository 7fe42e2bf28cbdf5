"""ReviewKD: ABF connectors + hierarchical context loss, with a linear warm-up (official CIFAR settings)."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from ..losses.reviewkd import ReviewConnector, hcl_loss, reviewkd_warmup
from .base import Batch, FeatureMethod, MethodParams, register_method


class ReviewKDParams(MethodParams):
    ce_weight: float = Field(1.0, ge=0)
    #: per pair in reviewKD.sh: 5 (WRN40-2 pairs, R32x4->R8x4/ShuffleV1), 8 (R32x4->ShuffleV2), 0.6 (R56->R20),
    #: 1.0 (R110->R32)
    review_weight: float = Field(1.0, ge=0)
    warmup_epochs: int = Field(20, ge=0)  # min(1, epoch / 20) with the 0-indexed epoch
    max_mid_channels: int = Field(512, ge=1)
    #: use the student's pre-activation stage outputs (mdistiller's STU_PREACT and the official ImageNet code; the
    #: official CIFAR code uses post-ReLU)
    student_preact: bool = False
    #: official CIFAR quirk: the teacher is frozen but never put in eval mode, so its BN uses (and updates) batch
    #: statistics during training
    teacher_bn_train: bool = False


@register_method("reviewkd")
class ReviewKD(FeatureMethod):
    Params = ReviewKDParams

    def __init__(self, student, teacher, params: ReviewKDParams, ctx):
        super().__init__(student, teacher, params, ctx)
        s_stages, t_stages = self.paired_stage_shapes("preact_feats" if params.student_preact else "feats",
                                                      "preact_feats")
        s_pool, t_pool = self.pooled_dim("student"), self.pooled_dim("teacher")
        self.connector = ReviewConnector(
            s_stages + [(s_pool, 1, 1)], t_stages + [(t_pool, 1, 1)], params.max_mid_channels
        )

    def _teacher_levels(self, images):
        if self.params.teacher_bn_train and self.training:
            self.teacher.train()
            try:
                out = self.teacher_features(images)
            finally:
                self.teacher.eval()
        else:
            out = self.teacher_features(images)
        return out.preact_feats[1:] + [out.pooled[:, :, None, None]]

    def forward(self, batch: Batch, epoch: int):
        p: ReviewKDParams = self.params
        out = self.student.forward_with_features(batch.images)
        s_feats = out.preact_feats if p.student_preact else out.feats
        s_levels = list(s_feats[1:]) + [out.pooled[:, :, None, None]]
        t_levels = self._teacher_levels(batch.images)
        hcl = hcl_loss(self.connector(s_levels), t_levels)
        return out.logits, {
            "ce": p.ce_weight * F.cross_entropy(out.logits, batch.labels),
            "reviewkd": p.review_weight * reviewkd_warmup(epoch, p.warmup_epochs) * hcl,
        }
