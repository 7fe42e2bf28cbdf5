"""DIST: "Knowledge Distillation from A Stronger Teacher" (Huang et al., NeurIPS 2022).

With y = softmax(z / tau) for student and teacher (B x C matrices):

* inter-class relation: 1 - mean_i pearson(y_s[i, :], y_t[i, :])   (each sample's row over the classes);
* intra-class relation: 1 - mean_c pearson(y_s[:, c], y_t[:, c])   (each class's column over the batch);

pearson(a, b) = <a - mean a, b - mean b> / (|a - mean a| |b - mean b| + 1e-8). Each term is multiplied by tau^2,
as in the official ``DIST`` module, and ``L_DIST = beta * inter + gamma * intra``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .kd import as_float


def pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``, shape (rows,)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def inter_class_relation(ys: Tensor, yt: Tensor) -> Tensor:
    return 1.0 - pearson_rows(ys, yt).mean()


def intra_class_relation(ys: Tensor, yt: Tensor) -> Tensor:
    return inter_class_relation(ys.t(), yt.t())


def dist_terms(student_logits: Tensor, teacher_logits: Tensor, tau: float = 4.0) -> tuple[Tensor, Tensor]:
    """(tau^2 * inter, tau^2 * intra)."""
    ys = F.softmax(as_float(student_logits) / tau, dim=1)
    yt = F.softmax(as_float(teacher_logits) / tau, dim=1)
    return tau**2 * inter_class_relation(ys, yt), tau**2 * intra_class_relation(ys, yt)


def dist_loss(
    student_logits: Tensor, teacher_logits: Tensor, beta: float = 1.0, gamma: float = 1.0, tau: float = 4.0
) -> Tensor:
    inter, intra = dist_terms(student_logits, teacher_logits, tau)
    return beta * inter + gamma * intra
