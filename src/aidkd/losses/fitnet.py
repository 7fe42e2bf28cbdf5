"""FitNets (Romero et al., ICLR 2015): regress a teacher hint layer from a student guided layer.

A regressor maps the student's feature to the teacher's shape (as RepDistiller's ``ConvReg``: a 3x3 stride-2 conv
when the student map is twice as large, a 4x4 stride-2 transposed conv when half as large, otherwise a valid conv
of kernel 1 + s - t, i.e. 1x1 at equal sizes; then BN and ReLU), and the loss is the mean squared error.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .kd import as_float


def regressor_kind(student_hw: tuple[int, int], teacher_hw: tuple[int, int]) -> str | None:
    """Which regressor maps a student map of ``student_hw`` to ``teacher_hw``; None when none does."""
    (sh, sw), (th, tw) = student_hw, teacher_hw
    if sh == 2 * th and sw == 2 * tw:
        return "down2"
    if 2 * sh == th and 2 * sw == tw:
        return "up2"
    if sh >= th and sw >= tw:
        return "valid"
    return None


class ConvRegressor(nn.Module):
    def __init__(self, student_shape: tuple[int, int, int], teacher_shape: tuple[int, int, int], relu: bool = True):
        super().__init__()
        sc, sh, sw = student_shape
        tc, th, tw = teacher_shape
        kind = regressor_kind((sh, sw), (th, tw))
        if kind == "down2":
            self.conv = nn.Conv2d(sc, tc, 3, stride=2, padding=1)
        elif kind == "up2":
            self.conv = nn.ConvTranspose2d(sc, tc, 4, stride=2, padding=1)
        elif kind == "valid":
            self.conv = nn.Conv2d(sc, tc, (1 + sh - th, 1 + sw - tw))
        else:
            raise ValueError(f"no regressor maps a {sh}x{sw} map to {th}x{tw}")
        self.bn = nn.BatchNorm2d(tc)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


def fitnet_loss(student_hint: Tensor, teacher_hint: Tensor) -> Tensor:
    """Mean squared error between the regressed student feature and the teacher's hint."""
    return F.mse_loss(as_float(student_hint), as_float(teacher_hint))
