"""Datasets by name, as loaders of device-resident, normalised :class:`~aidkd.data.base.Batch` es.

    data = build_data(cfg.data, device="cuda", rank=0, world_size=1, seed=0)
    data.spec.num_classes, data.spec.input_size, data.spec.num_train
    for epoch in range(epochs):
        data.train.set_epoch(epoch)
        for batch in data.train: ...        # Batch(images, labels, index)

Importing this package registers every dataset (one file each; see docs/data.md to add one).
"""
from . import cifar, digits, fashion_mnist, imagenet, pet, synthetic, tiny_imagenet  # noqa: F401  (registers datasets)
from .augment import TensorAugment, denormalize, normalize, random_crop, random_flip, to_float_normalized, uint8_affine
from .base import DATASETS, Batch, DataBundle, DataSpec, FolderSource, TensorSource, default_root
from .build import build_data, load_source, order_seed
from .folder import FolderLoader
from .sampling import class_balanced_batches, distributed_indices, eval_shard, stratified_split, stratified_subset
from .tensor_loader import TensorLoader


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = [
    "DATASETS", "Batch", "DataBundle", "DataSpec", "FolderLoader", "FolderSource", "TensorAugment", "TensorLoader",
    "TensorSource", "build_data", "class_balanced_batches", "default_root", "denormalize", "distributed_indices",
    "eval_shard", "list_datasets", "load_source", "normalize", "order_seed", "random_crop", "random_flip",
    "stratified_split", "stratified_subset", "to_float_normalized", "uint8_affine",
]
