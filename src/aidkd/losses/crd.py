"""Contrastive Representation Distillation (Tian, Krishnan, Isola, ICLR 2020), as in RepDistiller.

Student and teacher penultimate features are embedded by a linear layer + L2 normalisation (dimension 128). A
memory bank keeps one embedding per training sample for each model, updated with momentum. For each sample the
positive is its own memory slot and K negatives are other slots. Scores are exp(<v, m> / tau) / Z, with Z fixed
at the first step to mean(score) * N. Each direction (student embedding against the teacher's memory and
teacher embedding against the student's) gets the NCE loss of the official ``ContrastLoss``:

    L = -(1/B) sum_i [ log(x_i0 / (x_i0 + K/N + eps)) + sum_k log((K/N) / (x_ik + K/N + eps)) ].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NCE_EPS = 1e-7


class Embed(nn.Module):
    """Linear projection to ``dim_out`` followed by L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def nce_loss(scores: Tensor, num_data: int) -> Tensor:
    """NCE loss of a (B, K+1) score matrix whose column 0 holds the positives."""
    scores = scores.float() if scores.dtype not in (torch.float32, torch.float64) else scores
    b, k = scores.shape[0], scores.shape[1] - 1
    m_pn = k / float(num_data)
    pos, neg = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(pos / (pos + m_pn + NCE_EPS))
    log_d0 = torch.log(m_pn / (neg + m_pn + NCE_EPS))
    return -(log_d1.sum() + log_d0.sum()) / b


def contrast_scores(embed: Tensor, memory: Tensor, idx: Tensor, nce_t: float) -> Tensor:
    """exp(<embed_i, memory[idx_ij]> / nce_t), shape (B, K+1); the memory rows are not differentiated."""
    with torch.autocast(embed.device.type, enabled=False):  # exp(x / 0.07) needs float32
        dtype = torch.float64 if embed.dtype == torch.float64 else torch.float32
        w = memory[idx.reshape(-1)].detach().view(idx.shape[0], idx.shape[1], -1).to(dtype)
        return torch.exp(torch.bmm(w, embed.to(dtype).unsqueeze(2)).squeeze(2) / nce_t)


class ContrastMemory(nn.Module):
    """Two memory banks (student, teacher), the normalisation constants and the labels seen at every slot."""

    def __init__(self, feat_dim: int, num_data: int, nce_k: int, nce_t: float = 0.07, momentum: float = 0.5):
        super().__init__()
        self.num_data, self.nce_k, self.nce_t, self.momentum = num_data, nce_k, nce_t, momentum
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_s", torch.rand(num_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(num_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z_s", torch.tensor(-1.0))  # < 0: not set yet
        self.register_buffer("z_t", torch.tensor(-1.0))
        self.register_buffer("labels", torch.full((num_data,), -1, dtype=torch.long))  # -1: not seen yet

    def set_labels(self, labels: Tensor) -> None:
        """The label of every slot, known up front: :meth:`sample` then draws negatives exactly from the other
        classes (the official sampler's ``cls_negative``)."""
        labels = labels.to(self.labels.device, torch.long)
        self.labels.copy_(labels)
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels)
        self.register_buffer("slots_by_class", order, persistent=False)
        self.register_buffer("class_counts", counts, persistent=False)
        self.register_buffer("class_starts", torch.cumsum(counts, 0) - counts, persistent=False)

    def sample(self, index: Tensor, labels: Tensor | None, rounds: int = 4) -> Tensor:
        """(B, K+1) slot indices: the sample itself, then K negatives drawn uniformly with replacement.

        Without ``labels``: among all other slots. With ``labels`` and the slot labels given by
        :meth:`set_labels`: exactly among the slots of the other classes. With ``labels`` only: slots known (from
        earlier updates) to hold the same class are redrawn, up to ``rounds`` times, which approaches the same."""
        b = index.shape[0]
        if labels is not None and hasattr(self, "slots_by_class"):
            labels = labels.long()
            others = (self.num_data - self.class_counts[labels]).unsqueeze(1)  # slots of the other classes
            u = (torch.rand(b, self.nce_k, device=index.device) * others).long().clamp_max(others - 1)
            start, count = self.class_starts[labels].unsqueeze(1), self.class_counts[labels].unsqueeze(1)
            neg = self.slots_by_class[torch.where(u < start, u, u + count)]  # skip the own class's block
            return torch.cat([index.unsqueeze(1), neg], dim=1)
        neg = torch.randint(0, self.num_data, (b, self.nce_k), device=index.device)
        for _ in range(rounds):
            bad = neg == index.unsqueeze(1)
            if labels is not None:
                bad |= self.labels[neg] == labels.unsqueeze(1)
            if not bool(bad.any()):
                break
            neg = torch.where(bad, torch.randint_like(neg, 0, self.num_data), neg)
        return torch.cat([index.unsqueeze(1), neg], dim=1)

    def forward(
        self, v_s: Tensor, v_t: Tensor, index: Tensor, idx: Tensor, update: bool = True
    ) -> tuple[Tensor, Tensor]:
        """(scores of the student embedding against the teacher memory, teacher embedding against the student
        memory), normalised by Z; with ``update`` the memories are moved towards the new embeddings."""
        out_s = contrast_scores(v_s, self.memory_t, idx, self.nce_t)
        out_t = contrast_scores(v_t, self.memory_s, idx, self.nce_t)
        if self.z_s < 0:
            self.z_s.fill_(float(_mean_over_ranks(out_s.detach().mean())) * self.num_data)
        if self.z_t < 0:
            self.z_t.fill_(float(_mean_over_ranks(out_t.detach().mean())) * self.num_data)
        out_s, out_t = out_s / self.z_s, out_t / self.z_t
        if update:
            self.update(v_s, v_t, index)
        return out_s, out_t

    @torch.no_grad()
    def update(self, v_s: Tensor, v_t: Tensor, index: Tensor, labels: Tensor | None = None) -> None:
        """Momentum update of the slots ``index`` (and their labels). Under DDP every rank applies the updates of
        all ranks, so the banks stay identical (DDP's buffer broadcast then changes nothing)."""
        v_s, v_t, index = _gather(v_s.detach()), _gather(v_t.detach()), _gather(index)
        for mem, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            new = mem[index] * self.momentum + v.to(mem.dtype) * (1 - self.momentum)
            mem.index_copy_(0, index, F.normalize(new, dim=1))
        if labels is not None:
            self.labels[index] = _gather(labels).long()


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather(t: Tensor) -> Tensor:
    """Concatenate ``t`` (first dimension may differ) from every rank; ``t`` itself when not distributed."""
    if not _distributed():
        return t
    dist = torch.distributed
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def _mean_over_ranks(x: Tensor) -> Tensor:
    if _distributed():
        x = x.clone()
        torch.distributed.all_reduce(x)
        x /= torch.distributed.get_world_size()
    return x
