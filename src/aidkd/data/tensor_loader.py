"""The in-memory pipeline for small images (airbench style).

A whole split lives as one ``uint8 (N, C, H, W)`` tensor, on the device when ``data.in_memory`` is on (the
default for small-image datasets): a batch is one index gather, the augmentation is a handful of batched ops
on the device, and float conversion + normalisation is one fused multiply-add. No worker processes, no PIL,
no host-to-device copies per step. With ``in_memory=off`` the tensor stays in host memory and each finished
batch is copied to the device.

Each training batch records which view of each sample it holds (``Batch.view``, the augmentation's view id;
all 0 without augmentation), so that a teacher-output cache can serve the teacher's logits for exactly that
view. :meth:`TensorLoader.replay_views` restricts the draw to a fixed set of stored views per sample.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ..errors import UserError
from .base import Batch
from .augment import TensorAugment, to_float_normalized, uint8_affine
from .sampling import class_balanced_batches, distributed_indices, eval_shard, mix_seed


class TensorLoader:
    """Yields :class:`~aidkd.methods.base.Batch` es of one split held as a tensor.

    Training (``train=True``): a new order each epoch, ``DistributedSampler``-exact (``seed + epoch``, padded to
    a multiple of ``world_size``, rank ``r`` takes every ``world_size``-th sample), batches of ``batch_size``
    per rank with the last partial batch kept, augmented with ``augment``; or, with ``balanced=(P, K)``,
    class-balanced batches of ``P * K`` (each rank takes a contiguous slice of every global batch).
    Evaluation (``train=False``): the split in order, rank ``r`` taking positions ``r, r + world_size, ...``
    without padding (``num_samples`` is its count), no augmentation.

    ``index`` in each batch is the sample's position in this split; ``view`` (training only) the view id of
    each image under ``augment`` (:func:`aidkd.data.augment.decode_views`).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        train: bool = True,
        augment: TensorAugment | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        balanced: tuple[int, int] | None = None,
        drop_last: bool = False,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"TensorLoader needs uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.device = torch.device(device)
        self.images = images
        self.labels_store = labels.to(images.device, torch.long)
        self.labels = labels.detach().cpu().long()  # the whole split, in index order
        self.batch_size = batch_size  # per rank
        self.mean, self.std = tuple(mean), tuple(std)
        self.train = train
        self.augment = augment if (train and augment is not None and augment.active) else None
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.balanced = tuple(balanced) if (balanced and train) else None
        self.drop_last = drop_last and train
        self.epoch = 0
        self.view_table: Tensor | None = None  # (N, K) view ids to draw from, per sample (replay_views)
        self._pin = self.device.type == "cuda" and images.device.type == "cpu"
        self._affine = uint8_affine(self.mean, self.std, self.device)
        if self.balanced:
            P, K = self.balanced
            if (P * K) % world_size:
                raise UserError(f"data.balanced={list(self.balanced)}: P*K={P * K} is not divisible by {world_size} processes")
            self.batch_size = P * K // world_size
            self._num_balanced = len(self._balanced_batches(0))

    # ------------------------------------------------------------------------------------------------ sizes
    @property
    def dataset_size(self) -> int:
        """Samples in the whole split (all ranks)."""
        return self.images.shape[0]

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (training: including padding repeats; eval: its exact shard)."""
        n = self.dataset_size
        if not self.train:
            return len(range(self.rank, n, self.world_size))
        if self.balanced:
            return self._num_balanced * self.batch_size
        return math.ceil(n / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.balanced:
            return self._num_balanced
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order (and augmentation) the next iteration uses."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------------------------------------ order
    def _balanced_batches(self, epoch: int) -> list[Tensor]:
        g = torch.Generator()
        g.manual_seed(mix_seed(self.seed, epoch, 0xBA1))
        P, K = self.balanced  # type: ignore[misc]
        return class_balanced_batches(self.labels, P, K, g)

    def batch_indices(self, epoch: int | None = None) -> list[Tensor]:
        """The positions (CPU int64) of each batch this rank yields in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self.balanced:
            b = self.batch_size
            return [gb[self.rank * b : (self.rank + 1) * b] for gb in self._balanced_batches(epoch)]
        if self.train:
            idx = distributed_indices(self.dataset_size, self.rank, self.world_size, self.seed, epoch)
        else:
            idx = eval_shard(self.dataset_size, self.rank, self.world_size)
        out = list(idx.split(self.batch_size))
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def replay_views(self, table: Tensor) -> None:
        """From now on draw each training image's view uniformly among its row of ``table`` ``(N, K)`` (view ids
        of this loader's augmentation, one row per sample of the split) instead of among all its views."""
        if not self.train or self.augment is None:
            raise ValueError("replay_views needs a training loader with augmentation")
        if table.shape[0] != self.dataset_size or table.dim() != 2:
            raise ValueError(f"view table of shape {tuple(table.shape)} does not fit a split of {self.dataset_size}")
        self.view_table = table.to(self.images.device, torch.long)

    def _views(self, idx: Tensor, gen: torch.Generator | None) -> Tensor:
        if self.augment is None:
            return torch.zeros(idx.shape[0], dtype=torch.long, device=idx.device)
        if self.view_table is None:
            return self.augment.draw(idx.shape[0], gen, idx.device)
        k = torch.randint(0, self.view_table.shape[1], (idx.shape[0],), device=idx.device, generator=gen)
        return self.view_table[idx, k]

    # ------------------------------------------------------------------------------------------------ batches
    def __iter__(self) -> Iterator[Batch]:
        gen = None
        if self.augment is not None:
            gen = torch.Generator(device=self.images.device)
            gen.manual_seed(mix_seed(self.seed, self.epoch, self.rank, 0xA06))
        order = self.batch_indices()
        if not order:
            return
        store = self.images.device
        # the whole epoch's order goes to the storage device in one copy
        on_store = torch.cat(order).to(store, non_blocking=True).split([len(o) for o in order])
        for idx_cpu, idx in zip(order, on_store):
            x = self.images.index_select(0, idx)
            y = self.labels_store.index_select(0, idx)
            view = self._views(idx, gen) if self.train else None
            if self.augment is not None:
                x = self.augment.apply(x, view)
            if x.device != self.device:
                if self._pin:
                    x, y = x.pin_memory(), y.pin_memory()
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                idx = idx_cpu.to(self.device, non_blocking=True)
                view = view.to(self.device, non_blocking=True) if view is not None else None
            yield Batch(to_float_normalized(x, affine=self._affine), y, idx, view)

    def as_eval(self, batch_size: int | None = None) -> TensorLoader:
        """The same split as an evaluation loader: in order, sharded without padding, no augmentation (e.g. to
        compute per-sample teacher outputs over the training set)."""
        return TensorLoader(
            self.images, self.labels_store, batch_size=batch_size or self.batch_size, mean=self.mean, std=self.std,
            device=self.device, train=False, seed=self.seed, rank=self.rank, world_size=self.world_size,
        )

    def __repr__(self) -> str:
        return (f"TensorLoader(n={self.dataset_size}, shape={tuple(self.images.shape[1:])}, batch={self.batch_size}, "
                f"train={self.train}, rank={self.rank}/{self.world_size}, storage={self.images.device}, "
                f"augment={self.augment.describe() if self.augment else 'none'}, balanced={self.balanced})")
