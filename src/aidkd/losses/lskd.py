"""Logit standardisation (LSKD, Sun et al., CVPR 2024).

Each logit vector is z-scored before the softmax: z <- (z - mean(z)) / (std(z) + eps), with the unbiased (N-1)
standard deviation, as ``torch.std`` computes it in the official code. A KL computed afterwards at a "base
temperature" T_b is the ordinary KD at a per-sample, per-model temperature T_b * std(z), and it no longer asks the
student to match the teacher's logit range, only the relations between its logits.
"""
from __future__ import annotations

from torch import Tensor

from .kd import as_float


def standardize_logits(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """(z - mean) / (std + eps) over the class dimension (the last), unbiased std, in float32 at least."""
    logits = as_float(logits)
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)  # unbiased, as torch.std in LSKD's code
    return (logits - mean) / (std + eps)


def maybe_standardize(logits: Tensor, enabled: bool) -> Tensor:
    return standardize_logits(logits) if enabled else logits
