"""``build_data``: from a :class:`~aidkd.config.DataConfig` to a spec and three loaders, for every dataset alike."""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from ..errors import UserError
from .base import DATASETS, DataBundle, DataSpec, FolderSource, TensorSource, resolve_root
from .folder import FolderLoader, decode_to_tensor
from .sampling import stratified_split, stratified_subset
from .tensor_loader import TensorLoader

#: run seed -> the seed of the epoch orders (DistributedSampler's ``seed``). Spread out so that run seeds s and
#: s + 1 never share an epoch's order (DistributedSampler seeds ``seed + epoch``).
ORDER_SEED_STRIDE = 1_000_003


def order_seed(seed: int) -> int:
    return seed * ORDER_SEED_STRIDE


def load_source(cfg) -> Union[TensorSource, FolderSource]:
    """The dataset's raw splits (files found, read, downloaded if allowed); no split, subset or loader yet."""
    return DATASETS.get(cfg.name)(cfg, resolve_root(cfg))


def to_tensor_source(src: FolderSource, workers: int = 2) -> TensorSource:
    """Decode a fixed-size FolderSource into memory (``data.in_memory=on``)."""
    xtr, ytr = decode_to_tensor(src.train_samples, src.memory_hw, workers)  # type: ignore[arg-type]
    xte, yte = decode_to_tensor(src.test_samples, src.memory_hw, workers)  # type: ignore[arg-type]
    return TensorSource(name=src.name, num_classes=src.num_classes, mean=src.mean, std=src.std,
                        train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte,
                        augment=src.memory_augment, classes=src.classes)


def _balanced(cfg) -> tuple[int, int] | None:
    if cfg.balanced is None:
        return None
    if len(cfg.balanced) != 2 or min(cfg.balanced) < 1:
        raise UserError(f"data.balanced must be [P, K] (P classes x K samples per batch), got {cfg.balanced}")
    return int(cfg.balanced[0]), int(cfg.balanced[1])


def train_batch_per_process(cfg, world_size: int = 1) -> int:
    """The training batch each of ``world_size`` processes draws: P * K of ``cfg.balanced`` or ``cfg.batch_size``,
    split across the processes."""
    balanced = _balanced(cfg)
    return max(1, (balanced[0] * balanced[1] if balanced else cfg.batch_size) // world_size)


def build_data(cfg, *, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1, seed: int = 0) -> DataBundle:
    """Build the spec and the train / val / test loaders of ``cfg`` (a ``DataConfig``) for process ``rank`` of
    ``world_size``.

    * ``cfg.batch_size`` is global: each process gets ``batch_size // world_size`` (it must divide); with
      ``cfg.balanced = [P, K]`` the global training batch is ``P * K`` instead. ``cfg.eval_batch_size`` is
      global too (rounded up per process).
    * ``cfg.val_split`` holds out a class-stratified fraction of the training split as ``val`` (fixed seed,
      the same for every run); ``cfg.train_subset`` then keeps a class-stratified first ``N`` of the rest.
    * Small-image datasets (and tiny_imagenet with ``in_memory=on``) use :class:`TensorLoader`, file datasets
      :class:`FolderLoader`; both yield ``Batch(images, labels, index)`` on ``device``, normalised.
    * Training order: ``DistributedSampler``-exact with seed ``order_seed(seed)`` and ``set_epoch``.
    """
    device = torch.device(device)
    if cfg.batch_size % world_size:
        raise UserError(f"data.batch_size={cfg.batch_size} is the global batch and must be divisible by the "
                        f"{world_size} processes")
    balanced = _balanced(cfg)
    src = load_source(cfg)
    if isinstance(src, FolderSource):
        if cfg.in_memory == "on":
            if src.memory_hw is None:
                raise UserError(f"data.in_memory=on: dataset {cfg.name!r} has images of varying size and is read "
                                "from files; use in_memory=auto or off")
            src = to_tensor_source(src, cfg.workers)
    labels = src.train_labels if isinstance(src, TensorSource) else torch.tensor([s[1] for s in src.train_samples])
    keep, held = stratified_split(labels, cfg.val_split)
    if cfg.train_subset is not None:
        classes = int(labels.max()) + 1 if len(labels) else 0
        if cfg.train_subset < classes:
            raise UserError(f"data.train_subset={cfg.train_subset} is smaller than the {classes} classes of "
                            f"{cfg.name!r}: a class-stratified subset needs at least one image per class; use at "
                            f"least {classes}")
        keep = keep[stratified_subset(labels[torch.from_numpy(keep)], cfg.train_subset)]
    oseed = order_seed(seed)
    common = dict(device=device, seed=oseed, rank=rank, world_size=world_size)
    bs, ebs = cfg.batch_size // world_size, math.ceil(cfg.eval_batch_size / world_size)

    if isinstance(src, TensorSource):
        store = device if cfg.in_memory != "off" else torch.device("cpu")

        def put(x: torch.Tensor, y: torch.Tensor, pos: np.ndarray | None = None):
            if pos is not None:
                t = torch.from_numpy(pos)
                x, y = x[t], y[t]
            return x.contiguous().to(store), y.to(store)

        def loader(x, y, train: bool):
            return TensorLoader(x, y, batch_size=bs if train else ebs, mean=src.mean, std=src.std, train=train,
                                augment=src.augment if cfg.augment else None, balanced=balanced if train else None,
                                **common)

        train = loader(*put(src.train_images, src.train_labels, keep), train=True)
        val = loader(*put(src.train_images, src.train_labels, held), train=False) if len(held) else None
        test = loader(*put(src.test_images, src.test_labels), train=False)
        input_size = src.input_size
    else:
        pick = lambda pos: [src.train_samples[i] for i in pos.tolist()]  # noqa: E731

        def floader(samples, train: bool):
            tf = src.train_transform if (train and cfg.augment) else src.eval_transform
            return FolderLoader(samples, tf, batch_size=bs if train else ebs, train=train, workers=cfg.workers,
                                eval_transform=src.eval_transform, balanced=balanced if train else None, **common)

        train = floader(pick(keep), train=True)
        val = floader(pick(held), train=False) if len(held) else None
        test = floader(src.test_samples, train=False)
        input_size = src.input_size

    spec = DataSpec(
        name=src.name, num_classes=src.num_classes, input_size=tuple(input_size), mean=tuple(src.mean),
        std=tuple(src.std), num_train=train.dataset_size, num_val=val.dataset_size if val is not None else 0,
        num_test=test.dataset_size, classes=list(src.classes) if src.classes else None,
    )
    return DataBundle(spec=spec, train=train, val=val, test=test)
