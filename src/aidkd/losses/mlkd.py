"""Multi-Level Logit Distillation (Jin, Wang, Lin, CVPR 2023).

Predictions are "augmented" by computing them at several temperatures, and aligned at three levels at each one:

* instance level: KD at temperature T (times T^2), the usual batch-mean KL;
* batch level: the B x B Gram matrix of the predictions, ||P_s P_s^T - P_t P_t^T||_F^2 / B (input correlation);
* class level: the C x C Gram matrix, ||P_s^T P_s - P_t^T P_t||_F^2 / C (category correlation);

with P = softmax(z / T) (B x C). The correlation terms carry no T^2 factor (as in the official code).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .kd import as_float, kd_loss
from .lskd import maybe_standardize


def class_correlation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    ps = F.softmax(as_float(student_logits) / temperature, dim=1)
    pt = F.softmax(as_float(teacher_logits) / temperature, dim=1)
    diff = pt.t() @ pt - ps.t() @ ps
    return diff.pow(2).sum() / ps.shape[1]


def batch_correlation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    ps = F.softmax(as_float(student_logits) / temperature, dim=1)
    pt = F.softmax(as_float(teacher_logits) / temperature, dim=1)
    diff = pt @ pt.t() - ps @ ps.t()
    return diff.pow(2).sum() / ps.shape[0]


def multi_level_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperatures: tuple[float, ...] = (4.0, 3.0, 5.0, 2.0, 6.0),
    logit_standardization: bool = False,
) -> dict[str, Tensor]:
    """{"kd", "cc", "bc"}: each summed over ``temperatures``, unweighted. With ``logit_standardization`` only the
    instance-level KL sees standardised logits (as in LSKD's MLKD)."""
    zs_kd = maybe_standardize(as_float(student_logits), logit_standardization)
    zt_kd = maybe_standardize(as_float(teacher_logits), logit_standardization)
    kd = sum(kd_loss(zs_kd, zt_kd, t) for t in temperatures)
    cc = sum(class_correlation_loss(student_logits, teacher_logits, t) for t in temperatures)
    bc = sum(batch_correlation_loss(student_logits, teacher_logits, t) for t in temperatures)
    return {"kd": kd, "cc": cc, "bc": bc}
