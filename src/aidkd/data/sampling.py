"""Index arithmetic shared by every loader: distributed shards, class-balanced batches, stratified splits.

All functions return positions (``int64``) into a split; none touches images.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError

#: the seed of every validation split and training subset: fixed, so all runs of a benchmark share them
SPLIT_SEED = 20240601


def mix_seed(*xs: int) -> int:
    """A 63-bit seed from integers (splitmix-style), so that nearby (seed, epoch, rank) give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation ``DistributedSampler(shuffle=True, seed=seed)`` uses in ``epoch``."""
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    return torch.randperm(n, generator=g)


def distributed_indices(n: int, rank: int, world_size: int, seed: int, epoch: int, shuffle: bool = True) -> Tensor:
    """Exactly ``DistributedSampler(drop_last=False)``: the epoch's permutation, padded by repeating its head to
    a multiple of ``world_size``; rank ``r`` takes every ``world_size``-th position starting at ``r``.

    So step ``s`` with per-rank batch ``B / world_size`` sees, over all ranks, positions ``s*B .. (s+1)*B`` of the
    padded permutation: the same samples as step ``s`` of a one-process run with batch ``B`` (the last step
    adds at most ``world_size - 1`` padding repeats)."""
    idx = epoch_permutation(n, seed, epoch) if shuffle else torch.arange(n)
    total = math.ceil(n / world_size) * world_size
    pad = total - n
    if pad:
        idx = torch.cat([idx, idx.repeat(math.ceil(pad / max(n, 1)))[:pad]])
    return idx[rank:total:world_size]


def eval_shard(n: int, rank: int, world_size: int) -> Tensor:
    """Evaluation shard of ``rank``: positions ``rank, rank + world_size, ...`` without padding, so the shards
    partition the split and all-reduced sums of correct/total are exact."""
    return torch.arange(rank, n, world_size)


def class_balanced_batches(labels: Tensor, P: int, K: int, generator: Optional[torch.Generator] = None) -> list[Tensor]:
    """One epoch of class-balanced batches: each batch holds ``P`` distinct classes x ``K`` samples each (class
    blocks contiguous, ``P * K`` positions).

    Each class's samples are shuffled and cut into chunks of ``K`` (the last chunk, and classes with fewer than
    ``K`` samples, are filled up by sampling the class with replacement), so every sample appears about once
    per epoch. Each batch takes the next chunk of the ``P`` classes with the most chunks left (ties broken at
    random, so equal classes take turns in random groups); once fewer than ``P`` classes have chunks left, the
    batch is filled with fresh chunks of other classes. The batches of an epoch are then shuffled."""
    if P < 1 or K < 1:
        raise UserError(f"data.balanced=[P, K] needs P >= 1 and K >= 1, got [{P}, {K}]")
    labels = labels.detach().cpu().long()
    classes = torch.unique(labels)
    if len(classes) < P:
        raise UserError(f"data.balanced: P={P} classes per batch but the training set has only {len(classes)} classes")
    members = [torch.nonzero(labels == c).flatten() for c in classes.tolist()]

    def fill(m: Tensor, k: int) -> Tensor:  # k random samples of a class, with replacement
        return m[torch.randint(len(m), (k,), generator=generator)]

    chunks: list[list[Tensor]] = []
    for m in members:
        m = m[torch.randperm(len(m), generator=generator)]
        cs = list(m.split(K))
        if len(cs[-1]) < K:
            cs[-1] = torch.cat([cs[-1], fill(m, K - len(cs[-1]))])
        chunks.append(cs)
    remaining = torch.tensor([len(c) for c in chunks], dtype=torch.float64)
    batches: list[Tensor] = []
    while remaining.sum() > 0:
        # the P classes with the most chunks left, ties broken at random: classes of equal size take turns,
        # and the batches pack the chunks as tightly as possible (few filled-up batches at the end)
        key = remaining + torch.rand(len(remaining), generator=generator, dtype=torch.float64) * 0.5
        chosen = key.topk(P).indices.tolist()
        block = []
        for c in chosen:
            if remaining[c] > 0:
                block.append(chunks[c][len(chunks[c]) - int(remaining[c])])
                remaining[c] -= 1
            else:
                block.append(fill(members[c], K))
        batches.append(torch.cat(block))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder), never above a count."""
    exact = counts * (total / max(counts.sum(), 1))
    q = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - q), kind="stable")
    for c in order[: total - q.sum()]:
        q[c] += 1
    return np.minimum(q, counts)


def stratified_split(labels: Tensor | np.ndarray, fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a class-stratified ``fraction``: returns (kept positions, held-out positions), each sorted.
    Depends only on the labels, the fraction and ``seed`` (fixed by default), never on the run's seed."""
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).astype(np.int64)
    n = len(y)
    if fraction <= 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    classes, inv = np.unique(y, return_inverse=True)
    counts = np.bincount(inv, minlength=len(classes))
    quota = _quotas(counts, int(round(fraction * n)))
    rng = np.random.default_rng(seed)
    held = []
    for c in range(len(classes)):
        pos = np.flatnonzero(inv == c)
        held.append(rng.permutation(pos)[: quota[c]])
    held_pos = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held_pos] = False
    return np.flatnonzero(mask), held_pos


def stratified_subset(labels: Tensor | np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` samples, class-stratified: each class keeps its first samples (in dataset order) in
    proportion to its share of the split. Returns sorted positions."""
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).astype(np.int64)
    if n >= len(y):
        return np.arange(len(y))
    classes, inv = np.unique(y, return_inverse=True)
    quota = _quotas(np.bincount(inv, minlength=len(classes)), n)
    keep = [np.flatnonzero(inv == c)[: quota[c]] for c in range(len(classes))]
    return np.sort(np.concatenate(keep))
