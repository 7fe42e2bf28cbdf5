"""FitNets hint training (mdistiller's settings), and the shape checks the feature methods share."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from ..errors import UserError
from ..losses.fitnet import ConvRegressor, fitnet_loss, regressor_kind
from .base import METHODS, Batch, Method, MethodContext, MethodParams


def model_label(model) -> str:
    return getattr(model, "model_name", None) or getattr(model, "name", None) or type(model).__name__


def feature_info(method: str, role: str, model, ctx: MethodContext) -> dict:
    """``model.feature_info()`` at the run's input size, or a UserError when the model has none."""
    if not hasattr(model, "feature_info"):
        raise UserError(f"method {method!r}: the {role} {model_label(model)} has no feature_info(); it needs a "
                        "model that follows the aidkd feature contract")
    size = tuple(ctx.input_size) if ctx.input_size and len(ctx.input_size) == 3 else None
    return model.feature_info(size)


def stage_shapes(method: str, role: str, model, shapes: list, min_stages: int = 1) -> list[tuple[int, int, int]]:
    """The (C, H, W) shapes of ``feats[1:]``; a UserError when there are too few spatial stages."""
    stages = [tuple(s) for s in shapes[1:]]
    if len(stages) < min_stages or any(len(s) != 3 for s in stages):
        raise UserError(
            f"method {method!r}: the {role} {model_label(model)} has {len(stages)} spatial stage feature(s) "
            f"{stages}; it needs at least {min_stages} (C, H, W) stage outputs after the stem"
        )
    return stages


class FitNetParams(MethodParams):
    ce_weight: float = Field(1.0, ge=0)
    feat_weight: float = Field(100.0, ge=0)
    #: index into feats (0 = stem): 2 is the middle stage of the 3-stage CIFAR ResNets/WRNs (mdistiller)
    hint_layer: int = Field(2, ge=1)


@METHODS.register("fitnet")
class FitNet(Method):
    registered_name = "fitnet"
    Params = FitNetParams
    teacher_model_needed = "needs the teacher's features"

    def __init__(self, student, teacher, params: FitNetParams, ctx):
        super().__init__(student, teacher, params, ctx)
        name = self.method_name()
        s_info, t_info = feature_info(name, "student", student, ctx), feature_info(name, "teacher", teacher, ctx)
        k = params.hint_layer
        s_stages = stage_shapes(name, "student", student, s_info["feats"], min_stages=k)
        t_stages = stage_shapes(name, "teacher", teacher, t_info["feats"], min_stages=k)
        s_shape, t_shape = s_stages[k - 1], t_stages[k - 1]
        if regressor_kind(s_shape[1:], t_shape[1:]) is None:
            raise UserError(
                f"method {name!r}: the student {model_label(student)}'s feats[{k}] is {s_shape[1]}x{s_shape[2]}, "
                f"smaller than the teacher {model_label(teacher)}'s {t_shape[1]}x{t_shape[2]} (and not half its "
                "size); no regressor can match them: choose another hint_layer"
            )
        self.regressor = ConvRegressor(s_shape, t_shape)

    def forward(self, batch: Batch, epoch: int):
        p: FitNetParams = self.params
        out = self.student.forward_features(batch.images)
        t_feat = self.teacher_features(batch.images).feats[p.hint_layer]
        hint = self.regressor(out.feats[p.hint_layer])
        return out.logits, {
            "ce": p.ce_weight * F.cross_entropy(out.logits, batch.labels),
            "fitnet": p.feat_weight * fitnet_loss(hint, t_feat),
        }
