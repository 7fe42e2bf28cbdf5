"""Decoupled Knowledge Distillation (Zhao et al., CVPR 2022), as in mdistiller's ``DKD.py``.

With p = softmax(z / T) and g the ground-truth class of each sample:

* TCKD: KL between the binary distributions b = [p_g, 1 - p_g] of teacher and student (target vs. the rest);
* NCKD: KL between the distributions over the non-target classes, softmax(z / T - 1000 * onehot(g)).

Both are summed over the batch, divided by B and multiplied by T^2; ``L = alpha * TCKD + beta * NCKD``. As in the
official code the binary log uses ``torch.log`` without an epsilon and the target is masked with a finite -1000,
not -inf.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .kd import as_float

GT_MASK_OFFSET = 1000.0


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float | Tensor = 4.0
) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD), each already multiplied by T^2 and averaged over the batch."""
    zs, zt = as_float(student_logits), as_float(teacher_logits)
    n = zs.shape[0]
    gt = F.one_hot(labels.long(), zs.shape[1]).to(zs.dtype)

    ps = F.softmax(zs / temperature, dim=1)
    pt = F.softmax(zt / temperature, dim=1)
    ps_gt, pt_gt = (ps * gt).sum(1), (pt * gt).sum(1)
    ps_rest, pt_rest = (ps * (1 - gt)).sum(1), (pt * (1 - gt)).sum(1)
    bs = torch.stack([ps_gt, ps_rest], dim=1)
    bt = torch.stack([pt_gt, pt_rest], dim=1)
    tckd = (torch.xlogy(bt, bt) - bt * torch.log(bs)).sum() / n

    log_qs = F.log_softmax(zs / temperature - GT_MASK_OFFSET * gt, dim=1)
    log_qt = F.log_softmax(zt / temperature - GT_MASK_OFFSET * gt, dim=1)
    nckd = (log_qt.exp() * (log_qt - log_qs)).sum() / n

    scale = temperature**2
    return tckd * scale, nckd * scale


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float | Tensor = 4.0,
) -> Tensor:
    tckd, nckd = dkd_terms(student_logits, teacher_logits, labels, temperature)
    return alpha * tckd + beta * nckd


def dkd_warmup(epoch: int, warmup_epochs: int) -> float:
    """mdistiller's ``min(epoch / warmup, 1)`` with its 1-indexed epoch, from the engine's 0-indexed one."""
    if warmup_epochs <= 0:
        return 1.0
    return min((epoch + 1) / warmup_epochs, 1.0)
