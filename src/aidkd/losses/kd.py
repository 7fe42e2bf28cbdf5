"""Hinton et al., "Distilling the Knowledge in a Neural Network" (2015).

    L_KD = tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau)), reduced over the batch.

``reduction="batchmean"`` sums the KL over classes and averages over samples (mdistiller, CTKD, LSKD, the usual
definition). ``reduction="elementwise_mean"`` divides by B*C instead, which is what ``nn.KLDivLoss()`` with its
default ``'mean'`` reduction does in TAKD's official code: that KD term is 1/C of the batch-mean one.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

KLReduction = Literal["batchmean", "elementwise_mean"]


def as_float(x: Tensor) -> Tensor:
    """Loss arithmetic runs in float32 at least, whatever the autocast state (float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def kl_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor) -> Tensor:
    """KL(p_t || p_s) of every sample at temperature tau (no tau^2 factor), shape (B,)."""
    log_q = F.log_softmax(as_float(student_logits) / temperature, dim=1)
    log_p = F.log_softmax(as_float(teacher_logits) / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float | Tensor = 4.0,
    reduction: KLReduction = "batchmean",
) -> Tensor:
    """tau^2 * KL(teacher || student) at temperature tau; ``temperature`` may be a tensor carrying gradients."""
    kl = kl_per_sample(student_logits, teacher_logits, temperature).mean()
    if reduction == "elementwise_mean":
        kl = kl / student_logits.shape[1]
    elif reduction != "batchmean":
        raise ValueError(f"unknown KL reduction {reduction!r}")
    return kl * temperature**2
