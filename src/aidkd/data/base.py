"""What a dataset is to the rest of aidkd: a :class:`DataSpec`, the raw splits a dataset file returns, and the
``DATASETS`` registry.

A dataset is one file with one registered function ``fn(cfg: DataConfig, root: Path) -> TensorSource |
FolderSource``. It only finds (or downloads) its files and reads them; :func:`aidkd.data.build_data` does the
rest for every dataset alike: validation split, training subset, sharding, batching, augmentation and
normalisation. Small-image datasets return a :class:`TensorSource` (whole splits as ``uint8`` tensors), larger
ones a :class:`FolderSource` (lists of image files with torchvision transforms).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from ..errors import UserError
from ..registry import Registry
from .augment import TensorAugment

#: name -> ``fn(cfg: DataConfig, root: Path) -> TensorSource | FolderSource``
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")


@dataclass
class Batch:
    images: Tensor
    labels: Tensor
    index: Tensor | None = None  # position of each sample in the training set (CRD's memory bank needs it)
    #: which view of each sample the images are (``aidkd.data.augment.decode_views``); set by the training
    #: loader, None for any other images (e.g. a method's own extra view)
    view: Tensor | None = None


@dataclass
class DataSpec:
    """What the models and methods may know about a dataset (after the validation split and subset)."""

    name: str
    num_classes: int
    input_size: tuple[int, int, int]  # (C, H, W) of the images the loaders yield
    mean: tuple[float, ...]  # per-channel normalisation applied to images in [0, 1]
    std: tuple[float, ...]
    num_train: int  # training samples that remain after val_split / train_subset
    num_val: int = 0
    num_test: int = 0
    classes: Optional[list[str]] = None  # class names where the dataset has them


@dataclass
class DataBundle:
    """What :func:`~aidkd.data.build_data` returns: the spec and three loaders (``val`` is None without
    ``data.val_split``)."""

    spec: DataSpec
    train: Any  # TensorLoader | FolderLoader
    val: Any
    test: Any


@dataclass
class TensorSource:
    """A small-image dataset held whole in memory: images ``uint8 (N, C, H, W)``, labels ``int64 (N,)``."""

    name: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    augment: TensorAugment = field(default_factory=TensorAugment)  # the standard training augmentation
    classes: Optional[list[str]] = None

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{self.name}: {split}_images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
            if y.shape != (x.shape[0],):
                raise ValueError(f"{self.name}: {split}_labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
            setattr(self, f"{split}_labels", y.long())

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]


@dataclass
class FolderSource:
    """A dataset of image files: ``(path, label)`` lists and torchvision transforms (ending in ToTensor +
    Normalize). ``memory_hw`` set means the images have one fixed size and may be decoded into a
    :class:`TensorSource` (``data.in_memory=on``), augmented on the device with ``memory_augment``."""

    name: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]
    train_samples: list[tuple[str, int]]
    test_samples: list[tuple[str, int]]
    train_transform: Callable
    eval_transform: Callable
    classes: Optional[list[str]] = None
    memory_hw: Optional[int] = None
    memory_augment: TensorAugment = field(default_factory=TensorAugment)


def default_root() -> Path:
    """``$AIDKD_DATA`` or ``~/.cache/aidkd/data``."""
    env = os.environ.get("AIDKD_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aidkd" / "data"


def resolve_root(cfg) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else default_root()


def missing(name: str, directory: Path | str, expected: str, hint: str = "") -> UserError:
    """The one-line error for a dataset whose files are not where they should be."""
    msg = f"dataset {name!r}: files not found in {str(directory)!r}; expected {expected}"
    if hint:
        msg += f"; {hint}"
    return UserError(msg)
