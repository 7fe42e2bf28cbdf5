"""CIFAR-10 and CIFAR-100: 32x32 colour images, 50000 training / 10000 test, 10 or 100 classes.

Files: the "python version" archives from https://www.cs.toronto.edu/~kriz/cifar.html unpacked under
``data.root`` (torchvision's on-disk layout, where ``data.download`` puts them)::

    root/cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta}
    root/cifar-100-python/{train, test, meta}

Each file is a pickle of a dict: ``data`` (N x 3072 uint8, R then G then B planes of 32x32), ``labels``
(CIFAR-10) or ``fine_labels`` (CIFAR-100). Augmentation: random crop with zero padding 4 + horizontal flip;
normalisation with the constants of the common KD codebases (CRD, mdistiller).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .augment import TensorAugment
from .base import DATASETS, TensorSource, missing

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
EXPECTED = {
    "cifar10": "cifar-10-batches-py/{data_batch_1..data_batch_5,test_batch,batches.meta}",
    "cifar100": "cifar-100-python/{train,test,meta}",
}
LAYOUT = {  # folder, training files, test files, meta file, label key, class-name key
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}


def load_pickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with ``str`` keys (the originals were written by Python 2)."""
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _read(files: list[Path], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for p in files:
        d = load_pickle(p)
        xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def find_dir(name: str, root: Path) -> Optional[Path]:
    folder, train, test, *_ = LAYOUT[name]
    for d in (root / folder, root / name / folder, root):
        if all((d / f).is_file() for f in train + test):
            return d
    return None


def download(name: str, root: Path) -> None:
    """torchvision's downloader: fetches and unpacks the archive into ``root``."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    cls(str(root), train=True, download=True)


def load_cifar(name: str, cfg, root: Path) -> TensorSource:
    folder, train, test, meta, label_key, names_key = LAYOUT[name]
    expected = f"{EXPECTED[name]} (the python version, {URLS[name]}, unpacked)"
    d = find_dir(name, root)
    if d is None and cfg.download:
        try:
            download(name, root)
        except Exception as e:
            raise missing(name, root, expected, f"the download failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); put the files there or set data.root") from None
        d = find_dir(name, root)
    if d is None:
        raise missing(name, root, expected, "set data.root to the folder that holds " + folder + "/, or data.download=true")
    xtr, ytr = _read([d / f for f in train], label_key)
    xte, yte = _read([d / f for f in test], label_key)
    classes = None
    if (d / meta).is_file():
        classes = [str(c) for c in load_pickle(d / meta).get(names_key, [])] or None
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return TensorSource(
        name=name, num_classes=10 if name == "cifar10" else 100, mean=mean, std=std,
        train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte,
        augment=TensorAugment(crop_pad=4, flip=True), classes=classes,
    )


@DATASETS.register("cifar10")
def cifar10(cfg, root: Path) -> TensorSource:
    return load_cifar("cifar10", cfg, root)


@DATASETS.register("cifar100")
def cifar100(cfg, root: Path) -> TensorSource:
    return load_cifar("cifar100", cfg, root)
