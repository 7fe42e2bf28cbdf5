"""Logit MSE (Kim et al., "Comparing Kullback-Leibler Divergence and Mean Squared Error Loss in Knowledge
Distillation", IJCAI 2021): the squared distance between the student's and the teacher's logits,

    L_MSE = (1/B) sum_i ||z^s_i - z^t_i||^2          (``reduction="batchmean"``, the paper's ||.||^2 per sample)
    L_MSE = (1/(B C)) sum_i ||z^s_i - z^t_i||^2      (``reduction="elementwise_mean"``, ``nn.MSELoss()``: the
                                                      official code, jhoon-oh/kd_data, ``tools/losses.py``)

No temperature: the paper's point is that KD's KL tends to this loss as the temperature grows, and that matching
the logits directly works better. Computed in float32 at least.
"""
from __future__ import annotations

from typing import Literal

from torch import Tensor

from .kd import as_float

MSEReduction = Literal["batchmean", "elementwise_mean"]


def logit_mse_loss(student_logits: Tensor, teacher_logits: Tensor,
                   reduction: MSEReduction = "elementwise_mean") -> Tensor:
    """The squared distance of the logits, averaged over the batch (and over the classes with
    ``elementwise_mean``); gradients flow into both arguments (detach the teacher's)."""
    diff = as_float(student_logits) - as_float(teacher_logits)
    per_sample = diff.pow(2).sum(dim=1)
    if reduction == "batchmean":
        return per_sample.mean()
    if reduction == "elementwise_mean":
        return per_sample.mean() / student_logits.shape[1]
    raise ValueError(f"unknown MSE reduction {reduction!r}")
