"""Curriculum Temperature for KD (Li et al., AAAI 2023): a learnable global temperature trained adversarially.

* tau = t_start + t_end * sigmoid(theta), theta a learnable scalar (official init 1, t_start 1, t_end 20, so
  tau lies in (1, 21) and starts at about 15.6).
* theta reaches the loss through a gradient reversal layer: identity forward, gradient times -lambda backward, so
  the optimiser that minimises the distillation loss over the student *maximises* it over theta.
* lambda follows a cosine curriculum over the epochs: lambda(e) = lambda_max * (1 - cos(pi * e / E)) / 2 with the
  official 1-indexed epoch e clamped to E (E = 10), i.e. 0.024 at the first epoch, 1 from epoch E on. The
  official code writes it as ``CosineDecay(max=0, min=-1)`` = -lambda and multiplies the gradient by that value.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, strength: float) -> Tensor:
        ctx.strength = strength
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return -ctx.strength * grad, None


def gradient_reversal(x: Tensor, strength: float) -> Tensor:
    """Identity forward; backward multiplies the gradient by ``-strength``."""
    return _GradientReversal.apply(x, float(strength))


def ctkd_lambda(epoch: int, curriculum_epochs: int = 10, lambda_max: float = 1.0) -> float:
    """Reversal strength at the engine's 0-indexed ``epoch`` (the official code counts epochs from 1)."""
    if curriculum_epochs <= 0:
        return lambda_max
    e = min(max(epoch + 1, 0), curriculum_epochs)
    return lambda_max * (1.0 - math.cos(math.pi * e / curriculum_epochs)) / 2.0


def global_temperature(theta: Tensor, t_start: float = 1.0, t_end: float = 20.0) -> Tensor:
    return t_start + t_end * torch.sigmoid(theta)
