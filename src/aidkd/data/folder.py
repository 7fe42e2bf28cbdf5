"""The file pipeline for datasets too large to hold as one tensor (ImageNet, any ImageFolder tree).

Images are decoded and augmented by torchvision transforms in ``data.workers`` DataLoader processes; the
training order is ``DistributedSampler``'s (the same order the in-memory pipeline uses), evaluation shards are
exact (no padding). Batches reach the device as :class:`~aidkd.methods.base.Batch` es like the in-memory ones.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..errors import UserError
from .base import Batch
from .sampling import class_balanced_batches, eval_shard, mix_seed

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_rgb(path: str) -> Image.Image:
    """Decode an image file to RGB; a file that is not a readable image is a one-line UserError naming it."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        raise UserError(f"image file {path!r} cannot be decoded ({type(e).__name__}); remove or replace it") from None


def _worker_error(e: Exception) -> UserError | None:
    """A UserError raised in a DataLoader worker arrives wrapped in a multi-line message; recover its line."""
    for line in reversed(str(e).splitlines()):
        if line.startswith(("aidkd.errors.UserError: ", "UserError: ")):
            return UserError(line.split(": ", 1)[1])
    return None


def image_folder_samples(directory: Path, class_to_idx: Optional[dict[str, int]] = None) -> tuple[list[tuple[str, int]], list[str]]:
    """``(path, label)`` of every image under ``directory/<class>/`` (torchvision ImageFolder's scan) and the
    class names. With ``class_to_idx`` (e.g. the training split's), labels follow it."""
    from torchvision.datasets.folder import find_classes, make_dataset

    if class_to_idx is None:
        classes, class_to_idx = find_classes(str(directory))
    else:
        classes = sorted(class_to_idx, key=class_to_idx.__getitem__)
    samples = make_dataset(str(directory), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    return samples, list(classes)


def imagenet_transforms(mean=IMAGENET_MEAN, std=IMAGENET_STD, size: int = 224, resize: int = 256):
    """The standard ImageNet pair: RandomResizedCrop + flip for training; resize + center crop for evaluation."""
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(mean, std)]
    train = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *norm])
    evaluation = T.Compose([T.Resize(resize), T.CenterCrop(size), *norm])
    return train, evaluation


class IndexedFiles(Dataset):
    """``(image, label, index)`` for a list of ``(path, label)``; ``index`` is the position in the list."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return self.transform(load_rgb(path)), label, i


class ShardSampler(Sampler[int]):
    """Evaluation shard: positions ``rank, rank + world_size, ...`` in order, no padding."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.idx = eval_shard(n, rank, world_size).tolist()

    def __iter__(self):
        return iter(self.idx)

    def __len__(self) -> int:
        return len(self.idx)


class BalancedBatchSampler(Sampler[list[int]]):
    """This rank's contiguous slice of each class-balanced global batch (``P * K``) of the epoch."""

    def __init__(self, labels: Tensor, P: int, K: int, seed: int, rank: int, world_size: int):
        self.labels, self.P, self.K = labels, P, K
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.per_rank = P * K // world_size
        self._n = len(self._batches())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[Tensor]:
        g = torch.Generator()
        g.manual_seed(mix_seed(self.seed, self.epoch, 0xBA1))
        return class_balanced_batches(self.labels, self.P, self.K, g)

    def __iter__(self):
        b = self.per_rank
        for gb in self._batches():
            yield gb[self.rank * b : (self.rank + 1) * b].tolist()

    def __len__(self) -> int:
        return self._n


class FolderLoader:
    """Yields :class:`~aidkd.methods.base.Batch` es of image files, on ``device``.

    Same API as :class:`~aidkd.data.tensor_loader.TensorLoader`: ``len()`` (batches per epoch on this rank),
    ``set_epoch``, ``batch_size`` (per rank), ``num_samples``, ``dataset_size``, ``labels``, ``as_eval()``."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transform: Callable,
        *,
        batch_size: int,
        device: torch.device | str = "cpu",
        train: bool = True,
        workers: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        eval_transform: Optional[Callable] = None,
        balanced: Optional[tuple[int, int]] = None,
    ):
        self.device = torch.device(device)
        self.dataset = IndexedFiles(samples, transform)
        self.labels = torch.tensor([s[1] for s in samples], dtype=torch.long)
        self.batch_size, self.train, self.workers = batch_size, train, workers
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._eval_transform = eval_transform or transform
        n = len(samples)
        self.balanced = tuple(balanced) if (balanced and train) else None
        kw = dict(num_workers=workers, pin_memory=self.device.type == "cuda", persistent_workers=workers > 0)
        if self.balanced:
            P, K = self.balanced
            if (P * K) % world_size:
                raise UserError(f"data.balanced={list(self.balanced)}: P*K={P * K} is not divisible by {world_size} processes")
            self.sampler: Sampler = BalancedBatchSampler(self.labels, P, K, seed, rank, world_size)
            self.batch_size = P * K // world_size
            self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, **kw)
            return
        if train:
            self.sampler = DistributedSampler(
                self.dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
            )
        else:
            self.sampler = ShardSampler(n, rank, world_size)
        self.loader = DataLoader(self.dataset, batch_size=batch_size, sampler=self.sampler, drop_last=False, **kw)

    @property
    def dataset_size(self) -> int:
        return len(self.dataset)

    @property
    def num_samples(self) -> int:
        if self.balanced:
            return len(self.sampler) * self.batch_size
        return len(self.sampler)

    def __len__(self) -> int:
        if self.balanced:
            return len(self.sampler)
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Batch]:
        it = iter(self.loader)
        while True:
            try:
                x, y, i = next(it)
            except StopIteration:
                return
            except UserError as e:
                raise _worker_error(e) or e from None
            yield Batch(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True),
                        i.to(self.device, non_blocking=True))

    def as_eval(self, batch_size: Optional[int] = None) -> "FolderLoader":
        """The same files as an evaluation loader (in order, exact shards, the evaluation transform)."""
        return FolderLoader(self.dataset.samples, self._eval_transform, batch_size=batch_size or self.batch_size,
                            device=self.device, train=False, workers=self.workers, seed=self.seed, rank=self.rank,
                            world_size=self.world_size)

    def __repr__(self) -> str:
        return (f"FolderLoader(n={self.dataset_size}, batch={self.batch_size}, train={self.train}, "
                f"rank={self.rank}/{self.world_size}, workers={self.workers})")


class _Decode(Dataset):
    def __init__(self, samples, hw: int):
        self.samples, self.hw = samples, hw

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        img = load_rgb(self.samples[i][0])
        if img.size != (self.hw, self.hw):
            img = img.resize((self.hw, self.hw), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())


def decode_to_tensor(samples: Sequence[tuple[str, int]], hw: int, workers: int = 2) -> tuple[Tensor, Tensor]:
    """Decode image files into one ``uint8 (N, 3, hw, hw)`` tensor (resizing any of another size) and labels."""
    n = len(samples)
    out = torch.empty((n, 3, hw, hw), dtype=torch.uint8)
    dl = DataLoader(_Decode(samples, hw), batch_size=256, num_workers=workers, shuffle=False)
    pos = 0
    try:
        for x in dl:
            out[pos : pos + len(x)] = x
            pos += len(x)
    except UserError as e:
        raise _worker_error(e) or e from None
    return out, torch.tensor([s[1] for s in samples], dtype=torch.long)
