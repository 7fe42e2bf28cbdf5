"""Knowledge review (ReviewKD, Chen et al., CVPR 2021): attention-based fusion (ABF) plus the hierarchical context
loss (HCL).

The student's stage features (and its pooled feature as a 1x1 map) are processed deepest first. Each level goes
through an ABF: a 1x1 conv + BN to ``mid`` channels; where a deeper level exists, its fused output is
nearest-resized to this level's size, the pair is weighted by a 2-channel 1x1 conv + sigmoid
(x * a0 + y * a1); the result is nearest-resized to the teacher's spatial size and a 3x3 conv + BN maps it to
the teacher's channels. The fused map (at the teacher's size, before the 3x3 conv) is passed on to the next,
shallower level. HCL compares each output with the teacher's feature at full resolution (weight 1) and after
adaptive average pooling to 4x4, 2x2 and 1x1 (weights 1/2, 1/4, 1/8 in the order the levels are used; a level
not smaller than the map is skipped), divides by the total weight, and sums over the levels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kd import as_float

Shape = tuple[int, int, int]  # (C, H, W)


class ABF(nn.Module):
    """One attention-based fusion block."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.att_conv = (
            nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        )
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(output at the teacher's shape, fused map handed to the next shallower level)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("this ABF fuses a deeper level and needs its output")
            y = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            a = self.att_conv(torch.cat([x, y], dim=1))
            x = x * a[:, 0:1] + y * a[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_hw):
            x = F.interpolate(x, size=tuple(out_hw), mode="nearest")
        return self.conv2(x), x


class ReviewConnector(nn.Module):
    """The ABF chain from the student's levels (shallow to deep) to the teacher's."""

    def __init__(self, student_shapes: list[Shape], teacher_shapes: list[Shape], max_mid_channels: int = 512):
        super().__init__()
        if len(student_shapes) != len(teacher_shapes):
            raise ValueError("student and teacher need the same number of levels")
        mid = min(max_mid_channels, student_shapes[-1][0])
        n = len(student_shapes)
        # stored deepest first; the deepest level has nothing deeper to fuse
        self.abfs = nn.ModuleList(
            ABF(student_shapes[i][0], mid, teacher_shapes[i][0], fuse=i < n - 1) for i in reversed(range(n))
        )
        self.out_hw = [tuple(s[1:]) for s in reversed(teacher_shapes)]

    def forward(self, student_feats: list[Tensor]) -> list[Tensor]:
        """Student levels shallow to deep -> outputs at the teacher's shapes, shallow to deep."""
        outs: list[Tensor] = []
        residual = None
        for abf, x, hw in zip(self.abfs, reversed(student_feats), self.out_hw):
            out, residual = abf(x, residual, hw)
            outs.append(out)
        return outs[::-1]


def hcl_single(fs: Tensor, ft: Tensor, levels: tuple[int, ...] = (4, 2, 1)) -> Tensor:
    fs, ft = as_float(fs), as_float(ft)
    size = min(fs.shape[-2:])
    loss = F.mse_loss(fs, ft)
    weight, total = 1.0, 1.0
    for lv in levels:
        if lv >= size:
            continue
        weight /= 2.0
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, lv), F.adaptive_avg_pool2d(ft, lv))
        total += weight
    return loss / total


def hcl_loss(student_feats: list[Tensor], teacher_feats: list[Tensor]) -> Tensor:
    """Hierarchical context loss, summed over the levels."""
    return sum(hcl_single(fs, ft) for fs, ft in zip(student_feats, teacher_feats, strict=True))


def reviewkd_warmup(epoch: int, warmup_epochs: int) -> float:
    """``min(1, epoch / warmup)`` with the official 0-indexed epoch (no KD at epoch 0)."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, epoch / warmup_epochs)
