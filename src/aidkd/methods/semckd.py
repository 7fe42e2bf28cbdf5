"""SemCKD: CE + KD + every student stage matched to every teacher stage by a per-sample attention
(losses/semckd.py). Published CIFAR settings (DefangChen/SemCKD and /SimKD scripts): ``-c 1 -d 1 -b 400``, KD at
temperature 4, attention scale 1.

The attention's embeddings read one row per sample of the batch Gram matrix, so they are built for the
per-process training batch; the official code skips a shorter (last) batch altogether, here such a batch trains on
CE + KD alone (the SemCKD term is zero for it).
"""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from ..errors import UserError
from ..losses.kd import kd_loss
from ..losses.semckd import SemCKDAttention, semckd_loss
from .base import Batch, FeatureMethod, MethodParams, register_method


class SemCKDParams(MethodParams):
    ce_weight: float = Field(1.0, ge=0)  # -c 1
    kd_weight: float = Field(1.0, ge=0)  # -d 1
    temperature: float = Field(4.0, gt=0)
    feat_weight: float = Field(400.0, ge=0)  # -b 400
    soft: float = Field(1.0, gt=0)  # the attention's temperature (-s)
    embed_factor: int = Field(4, ge=1)  # query / key size: batch / 4


@register_method("semckd")
class SemCKD(FeatureMethod):
    Params = SemCKDParams

    def __init__(self, student, teacher, params: SemCKDParams, ctx):
        super().__init__(student, teacher, params, ctx)
        s_channels = [c for c, _, _ in self.stage_shapes("student")]
        t_channels = [c for c, _, _ in self.stage_shapes("teacher")]
        if ctx.batch_size < params.embed_factor:
            raise UserError(f"method 'semckd' embeds each sample's row of the batch Gram matrix into batch / "
                            f"{params.embed_factor} dimensions: a training batch of {ctx.batch_size} per process is "
                            f"too small; raise data.batch_size to at least {params.embed_factor} per process")
        self.attention = SemCKDAttention(ctx.batch_size, s_channels, t_channels, params.soft, params.embed_factor)

    def forward(self, batch: Batch, epoch: int):
        p: SemCKDParams = self.params
        out = self.student.forward_with_features(batch.images)
        t_out = self.teacher_features(batch.images)
        losses = {"ce": p.ce_weight * F.cross_entropy(out.logits, batch.labels),
                  "kd": p.kd_weight * kd_loss(out.logits, t_out.logits, p.temperature)}
        if batch.labels.shape[0] == self.attention.batch_size:
            values, targets, attention = self.attention(out.feats[1:], t_out.feats[1:])
            losses["semckd"] = p.feat_weight * semckd_loss(values, targets, attention)
        else:  # zero, yet touching every attention parameter, so that DDP finds them all used in every step
            losses["semckd"] = 0.0 * sum(q.sum() for q in self.attention.parameters())
        return out.logits, losses
