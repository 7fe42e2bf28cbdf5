"""DGKD (Son et al., ICCV 2021, "Densely Guided Knowledge Distillation using Multiple Teacher Assistants").

A model below the teacher learns from every larger model at once, the teacher and each assistant above it: its
distillation term is the sum of the KD terms towards each of those guides. Stochastic DGKD drops guides at random
in every step (the paper's regulariser, likened to dropout): ``drop`` of the n guides are left out, chosen
uniformly; at least one guide always remains.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .kd import KLReduction, kd_loss


def kept_guides(n_guides: int, drop: int, generator: torch.Generator | None = None) -> list[int]:
    """The guides a step keeps, in their order: ``min(drop, n_guides - 1)`` of ``range(n_guides)`` dropped
    uniformly at random (one ``torch.randperm`` draw)."""
    if n_guides < 1:
        raise ValueError("DGKD needs at least one guide")
    dropped = min(drop, n_guides - 1)
    if dropped == 0:
        return list(range(n_guides))
    order = torch.randperm(n_guides, generator=generator)
    return sorted(order[dropped:].tolist())


def dense_guidance_loss(student_logits: Tensor, guide_logits: list[Tensor], temperature: float = 4.0,
                        reduction: KLReduction = "batchmean") -> Tensor:
    """sum over the guides g of tau^2 KL(p_g || p_s) at temperature tau (each term :func:`kd_loss`)."""
    if not guide_logits:
        raise ValueError("DGKD needs at least one guide's logits")
    return sum(kd_loss(student_logits, g, temperature, reduction) for g in guide_logits)
