"""CRD: contrastive representation distillation with a momentum memory bank (RepDistiller / mdistiller settings)."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..errors import UserError
from ..losses.crd import ContrastMemory, Embed, nce_loss
from ..losses.kd import kd_loss
from .base import Batch, FeatureMethod, MethodParams, register_method


class CRDParams(MethodParams):
    ce_weight: float = Field(1.0, ge=0)
    crd_weight: float = Field(0.8, ge=0)
    kd_weight: float = Field(0.0, ge=0)  # RepDistiller's "-a": 0 for CRD, 1 for CRD+KD
    temperature: float = Field(4.0, gt=0)  # of the optional KD term
    feat_dim: int = Field(128, ge=1)
    nce_k: int = Field(16384, ge=1)  # negatives per sample
    nce_t: float = Field(0.07, gt=0)
    nce_m: float = Field(0.5, ge=0, lt=1)  # memory momentum
    #: "other_class": negatives from the other classes, as the official sampler (exactly when the engine gives the
    #: training labels; else redrawn while their slot is known to hold the sample's class); "uniform": any slot
    negatives: Literal["other_class", "uniform"] = "other_class"


@register_method("crd")
class CRD(FeatureMethod):
    Params = CRDParams

    def __init__(self, student, teacher, params: CRDParams, ctx):
        super().__init__(student, teacher, params, ctx)
        name = self.method_name()
        if ctx.num_train <= 0:
            raise UserError(f"method {name!r} keeps one memory slot per training sample and needs the training-set "
                            "size (MethodContext.num_train)")
        self.embed_s = Embed(self.pooled_dim("student"), params.feat_dim)
        self.embed_t = Embed(self.pooled_dim("teacher"), params.feat_dim)
        self.memory = ContrastMemory(params.feat_dim, ctx.num_train, params.nce_k, params.nce_t, params.nce_m)
        if ctx.train_labels is not None:  # the label of every slot: negatives exactly from the other classes
            labels = torch.as_tensor(ctx.train_labels, dtype=torch.long).reshape(-1)
            if labels.numel() != ctx.num_train:
                raise UserError(f"method {name!r}: {labels.numel()} training labels for {ctx.num_train} training "
                                "samples (MethodContext.train_labels must give one label per Batch.index)")
            self.memory.set_labels(labels)

    def forward(self, batch: Batch, epoch: int):
        p: CRDParams = self.params
        if batch.index is None:
            raise UserError("method 'crd' needs the sample index of every training batch (Batch.index) for its "
                            "memory bank; use a data pipeline that yields indices")
        out = self.student.forward_with_features(batch.images)
        t_out = self.teacher_features(batch.images)
        index = batch.index.long()
        use_labels = batch.labels if p.negatives == "other_class" else None
        idx = self.memory.sample(index, use_labels)
        v_s, v_t = self.embed_s(out.pooled), self.embed_t(t_out.pooled)
        out_s, out_t = self.memory(v_s, v_t, index, idx, update=False)
        if self.training:
            self.memory.update(v_s, v_t, index, batch.labels)
        losses = {
            "ce": p.ce_weight * F.cross_entropy(out.logits, batch.labels),
            "crd": p.crd_weight * (nce_loss(out_s, self.memory.num_data) + nce_loss(out_t, self.memory.num_data)),
        }
        if p.kd_weight > 0:
            losses["kd"] = p.kd_weight * kd_loss(out.logits, t_out.logits, p.temperature)
        return out.logits, losses
