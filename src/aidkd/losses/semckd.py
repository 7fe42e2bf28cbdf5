"""SemCKD (Chen et al., AAAI 2021, "Cross-Layer Distillation with Semantic Calibration").

Every student stage i is matched to every teacher stage j, weighted by an attention that each sample computes
from the similarity structure of its batch:

* each stage's batch Gram matrix G = F F^T (F: the stage map of the B samples, flattened), one row per sample,
  embedded by a small MLP per stage (Linear B -> 2B/f, ReLU, Linear -> B/f, L2 normalisation): a query per
  student stage, a key per teacher stage;
* the attention alpha[b, i, :] = softmax_j(<q_i(b), k_j(b)> / soft);
* a projector per pair (1x1 conv to 2 C_t, BN, ReLU, 3x3 conv, BN, ReLU, 1x1 conv to C_t) maps the student map
  to the teacher's channels, after the larger map of the pair is average-pooled to the smaller side;
* the loss is sum_{b,i,j} alpha[b,i,j] * mean_{c,h,w} (P_ij(s_i) - t_j)^2 / (B * S), S the student's stage count.

The embeddings read rows of length B, so the attention is built for one batch size (the per-process training
batch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kd import as_float
from .simkd import align_spatial


class StageEmbed(nn.Sequential):
    """A sample's row of a stage's Gram matrix -> an L2-normalised query or key."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__(nn.Linear(dim_in, 2 * dim_out), nn.ReLU(inplace=True), nn.Linear(2 * dim_out, dim_out))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(super().forward(x), p=2, dim=1, eps=0.0)


class PairProjector(nn.Sequential):
    """Student stage channels -> teacher stage channels: 1x1 (to 2 C_t), 3x3, 1x1 convolutions."""

    def __init__(self, student_channels: int, teacher_channels: int):
        mid = 2 * teacher_channels
        super().__init__(
            nn.Conv2d(student_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, teacher_channels, 1, bias=False),
        )


def gram_rows(feature: Tensor) -> Tensor:
    """The batch Gram matrix of a stage map, (B, B): row b holds sample b's inner products with the batch."""
    flat = feature.reshape(feature.shape[0], -1)
    return flat @ flat.t()


class SemCKDAttention(nn.Module):
    """The queries, keys and pair projectors of SemCKD for ``batch_size`` samples per step."""

    def __init__(self, batch_size: int, student_channels: list[int], teacher_channels: list[int],
                 soft: float = 1.0, factor: int = 4):
        super().__init__()
        dim = batch_size // factor
        if dim < 1:
            raise ValueError(f"a batch of {batch_size} is smaller than the embedding factor {factor}")
        self.batch_size, self.soft = batch_size, soft
        self.queries = nn.ModuleList(StageEmbed(batch_size, dim) for _ in student_channels)
        self.keys = nn.ModuleList(StageEmbed(batch_size, dim) for _ in teacher_channels)
        self.projectors = nn.ModuleList(
            nn.ModuleList(PairProjector(s, t) for t in teacher_channels) for s in student_channels)

    def forward(self, student_maps: list[Tensor], teacher_maps: list[Tensor]):
        """(values, targets, attention): values[i][j] the projected student map i, targets[i][j] teacher map j at
        the pair's side, attention (B, S, T)."""
        q = torch.stack([embed(gram_rows(f)) for embed, f in zip(self.queries, student_maps)], 1)  # (B, S, d)
        k = torch.stack([embed(gram_rows(f)) for embed, f in zip(self.keys, teacher_maps)], 2)  # (B, d, T)
        attention = torch.softmax(torch.bmm(q, k) / self.soft, dim=-1)
        values, targets = [], []
        for s_map, row in zip(student_maps, self.projectors):
            pairs = [align_spatial(s_map, t_map) for t_map in teacher_maps]
            values.append([proj(src) for proj, (src, _) in zip(row, pairs)])
            targets.append([tgt for _, tgt in pairs])
        return values, targets, attention


def semckd_loss(values: list[list[Tensor]], targets: list[list[Tensor]], attention: Tensor) -> Tensor:
    """sum_{b,i,j} attention[b,i,j] * mean_{c,h,w} (values[i][j] - targets[i][j])^2, divided by B * S."""
    b, n_s, _ = attention.shape
    per_pair = torch.stack([
        torch.stack([(as_float(v) - as_float(t)).pow(2).reshape(b, -1).mean(1) for v, t in zip(vs, ts)], 1)
        for vs, ts in zip(values, targets)], 1)  # (B, S, T)
    return (as_float(attention) * per_pair).sum() / (b * n_s)
