"""The exact split of the KD loss into class-wise similarity (L_CS) and inner-class distribution (L_IC).

With p_i = softmax(z^t_i / tau), q_i = softmax(z^s_i / tau) and the samples grouped by ground-truth class
(G_k, n_k = |G_k|):

* class-wise similarity of class k: m_k = mean_{i in G_k} p_i (a distribution over the C classes);
* inner-class distribution of output class c in class k: r_{k,c}(i) = p_i(c) / sum_{j in G_k} p_j(c).

Since p_i(c) = n_k m_k(c) r_{k,c}(i), the chain rule of KL gives, exactly,

    tau^2/N sum_i KL(p_i || q_i) = L_CS + L_IC
    L_CS = tau^2 sum_k n_k/N KL(m_k || m^_k)
    L_IC = tau^2 sum_k n_k/N sum_c m_k(c) KL(r_{k,c} || r^_{k,c})
         = tau^2/N sum_i sum_c p_i(c) [log r_{y_i,c}(i) - log r^_{y_i,c}(i)].

Everything is computed in log space and vectorised over groups with scatter operations (no loop over classes),
in float32 or better whatever the autocast state.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Decomposition:
    kd: Tensor  # tau^2 * batch-mean KL(p || q)
    cs: Tensor  # class-wise similarity part
    ic: Tensor  # inner-class distribution part


def _work_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def group_logsumexp(values: Tensor, labels: Tensor, num_groups: int) -> Tensor:
    """log sum_{i: labels_i = k} exp(values_i) for every k, shape (num_groups, C); -inf for empty groups."""
    c = values.shape[1]
    idx = labels.view(-1, 1).expand(-1, c)
    gmax = torch.full((num_groups, c), float("-inf"), dtype=values.dtype, device=values.device)
    gmax = gmax.scatter_reduce(0, idx, values.detach(), reduce="amax", include_self=True)
    safe_max = torch.where(torch.isfinite(gmax), gmax, torch.zeros_like(gmax))
    sums = torch.zeros((num_groups, c), dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, labels, torch.exp(values - safe_max[labels]))
    return torch.log(sums) + safe_max


def class_log_means(log_p: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """(log m_k, n_k): log of the class-mean distribution of every class and the class counts."""
    counts = torch.bincount(labels, minlength=num_classes).to(log_p.dtype)
    log_sum = group_logsumexp(log_p, labels, num_classes)
    return log_sum - torch.log(counts).unsqueeze(1), counts


def inner_class_log_dist(log_p: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """log r_{y_i, c}(i) for every sample i and class c, shape (N, C)."""
    return log_p - group_logsumexp(log_p, labels, num_classes)[labels]


def kd_decomposition(
    *,
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float | Tensor = 4.0,
    detach_class_weights: bool = False,
) -> Decomposition:
    """Split tau^2 * batch-mean KL(p_teacher || q_student) into L_CS + L_IC (both returned with L_KD).

    Every argument is a keyword (``kd_decomposition(student_logits=zs, teacher_logits=zt, labels=y)``): the loss
    functions take (student, teacher) and the split-level functions of :mod:`aidkd.aid` (teacher, student), so a
    positional call here would be a silent trap.

    ``teacher_logits`` is the target distribution's logits, ``student_logits`` the second argument of the KL; both
    may carry gradients (AID fine-tuning passes the adapting teacher as the target). With
    ``detach_class_weights`` the weights m_k(c) inside L_IC are detached, so L_IC moves only where each class's
    mass sits among the samples, not the class means.
    """
    dtype = _work_dtype(student_logits)
    zs, zt = student_logits.to(dtype), teacher_logits.to(dtype)
    n, num_classes = zs.shape
    labels = labels.long()
    log_p = torch.log_softmax(zt / temperature, dim=1)
    log_q = torch.log_softmax(zs / temperature, dim=1)
    p = log_p.exp()
    scale = temperature**2 / n

    kd = scale * (p * (log_p - log_q)).sum()

    log_m, counts = class_log_means(log_p, labels, num_classes)
    log_mh, _ = class_log_means(log_q, labels, num_classes)
    present = counts > 0
    m = log_m[present].exp()
    cs = scale * (counts[present].unsqueeze(1) * m * (log_m[present] - log_mh[present])).sum()

    log_r = log_p - (log_m + torch.log(counts).unsqueeze(1))[labels]
    log_rh = log_q - (log_mh + torch.log(counts).unsqueeze(1))[labels]
    if detach_class_weights:
        weight = (counts.unsqueeze(1) * log_m.exp().detach())[labels] * log_r.exp()
    else:
        weight = p
    ic = scale * (weight * (log_r - log_rh)).sum()
    return Decomposition(kd=kd, cs=cs, ic=ic)
