"""FitNets hint training (mdistiller's settings)."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from ..errors import UserError
from ..losses.fitnet import ConvRegressor, fitnet_loss, regressor_kind
from .base import Batch, FeatureMethod, MethodParams, model_label, register_method


class FitNetParams(MethodParams):
    ce_weight: float = Field(1.0, ge=0)
    feat_weight: float = Field(100.0, ge=0)
    #: index into feats (0 = stem): 2 is the middle stage of the 3-stage CIFAR ResNets/WRNs (mdistiller)
    hint_layer: int = Field(2, ge=1)


@register_method("fitnet")
class FitNet(FeatureMethod):
    Params = FitNetParams

    def __init__(self, student, teacher, params: FitNetParams, ctx):
        super().__init__(student, teacher, params, ctx)
        k = params.hint_layer
        s_shape = self.stage_shapes("student", min_stages=k)[k - 1]
        t_shape = self.stage_shapes("teacher", min_stages=k)[k - 1]
        if regressor_kind(s_shape[1:], t_shape[1:]) is None:
            raise UserError(
                f"method {self.method_name()!r}: the student {model_label(student)}'s feats[{k}] is "
                f"{s_shape[1]}x{s_shape[2]}, smaller than the teacher {model_label(teacher)}'s "
                f"{t_shape[1]}x{t_shape[2]} (and not half its size); no regressor can match them: choose another "
                "hint_layer"
            )
        self.regressor = ConvRegressor(s_shape, t_shape)

    def forward(self, batch: Batch, epoch: int):
        p: FitNetParams = self.params
        out = self.student.forward_with_features(batch.images)
        t_feat = self.teacher_features(batch.images).feats[p.hint_layer]
        hint = self.regressor(out.feats[p.hint_layer])
        return out.logits, {
            "ce": p.ce_weight * F.cross_entropy(out.logits, batch.labels),
            "fitnet": p.feat_weight * fitnet_loss(hint, t_feat),
        }
