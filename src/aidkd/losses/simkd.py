"""SimKD (Chen et al., CVPR 2022, "Knowledge Distillation with the Reused Teacher Classifier").

The student's last feature map is aligned to the teacher's in space (the larger map average-pooled to the
smaller side) and in channels (a bottleneck projector: 1x1 conv to C_t / factor, 3x3 conv, 1x1 conv to C_t, each
followed by BN and ReLU), and the loss is the mean squared error to the teacher's last feature map, over every
element. The student is then deployed with the teacher's own classifier on top of the pooled projection
(:class:`aidkd.models.reused_head.ReusedHeadStudent`).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .kd import as_float


def align_spatial(student_map: Tensor, teacher_map: Tensor) -> tuple[Tensor, Tensor]:
    """Both maps at the smaller of the two sides: the larger one average-pooled to a square of that side (as the
    official code does, for the square maps of the CIFAR and ImageNet zoos)."""
    s_h, t_h = student_map.shape[2], teacher_map.shape[2]
    if s_h > t_h:
        return F.adaptive_avg_pool2d(student_map, (t_h, t_h)), teacher_map
    if s_h < t_h:
        return student_map, F.adaptive_avg_pool2d(teacher_map, (s_h, s_h))
    return student_map, teacher_map


class SimKDProjector(nn.Sequential):
    """The bottleneck that maps the student's channels to the teacher's: C_s -> C_t/factor -> C_t/factor -> C_t."""

    def __init__(self, student_channels: int, teacher_channels: int, factor: int = 2):
        mid = teacher_channels // factor
        if mid < 1:
            raise ValueError(f"factor {factor} leaves no channels of the teacher's {teacher_channels}")
        super().__init__(
            nn.Conv2d(student_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, teacher_channels, 1, bias=False), nn.BatchNorm2d(teacher_channels), nn.ReLU(inplace=True),
        )


def simkd_loss(projected: Tensor, teacher_map: Tensor) -> Tensor:
    """Mean squared error over every element between the projected student map and the teacher's map."""
    return F.mse_loss(as_float(projected), as_float(teacher_map))
