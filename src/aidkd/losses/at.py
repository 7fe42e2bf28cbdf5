"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017), activation-based, as in RepDistiller / mdistiller.

The attention map of a feature f (B x C x H x W) is the L2-normalised, flattened mean over channels of f^p
(p = 2). Per stage the loss is the mean of the squared difference of the two maps, after adaptive average pooling
of the larger map to the smaller one's size; the stages are summed.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .kd import as_float


def attention_map(feat: Tensor, p: float = 2.0) -> Tensor:
    return F.normalize(as_float(feat).pow(p).mean(1).flatten(1), dim=1)


def at_stage_loss(fs: Tensor, ft: Tensor, p: float = 2.0) -> Tensor:
    hs, ws = fs.shape[-2:]
    ht, wt = ft.shape[-2:]
    if (hs, ws) != (ht, wt):
        h, w = min(hs, ht), min(ws, wt)
        if (hs, ws) != (h, w):
            fs = F.adaptive_avg_pool2d(fs, (h, w))
        if (ht, wt) != (h, w):
            ft = F.adaptive_avg_pool2d(ft, (h, w))
    return (attention_map(fs, p) - attention_map(ft, p)).pow(2).mean()


def at_loss(student_feats: list[Tensor], teacher_feats: list[Tensor], p: float = 2.0) -> Tensor:
    return sum(at_stage_loss(fs, ft, p) for fs, ft in zip(student_feats, teacher_feats, strict=True))
