"""Fashion-MNIST (Zalando): 28x28 grey clothing images, 60000 training / 10000 test, 10 classes.

Files: the four raw idx files, gzipped or not, in the first of these folders that has them: ``data.root``,
``root/fashion_mnist``, ``root/fashion-mnist``, ``root/FashionMNIST/raw`` (torchvision's layout, where
``data.download`` puts them), and, when ``data.root`` is not given, ``/usr/share/datasets/fashion-mnist``::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]  t10k-images-idx3-ubyte[.gz]  t10k-labels-idx1-ubyte[.gz]

Augmentation: random crop with zero padding 2 + horizontal flip (the usual CIFAR recipe scaled to 28 pixels;
clothes are close to mirror-symmetric, and padding 4 would cut off too much of a 28-pixel garment).
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import UserError
from .augment import TensorAugment
from .base import DATASETS, TensorSource, missing

MEAN, STD = (0.2860,), (0.3530,)
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (``.gz`` or raw): big-endian magic ``0x0000 0x08 ndim``, ndim int32 sizes, ubyte data.
    Anything else (not gzip, truncated, another type) is a one-line UserError naming the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{str(path)!r} cannot be read ({type(e).__name__}: {str(e)[:80]}); it is corrupt: replace "
                        "it with the original file") from None
    if len(data) < 4:
        raise UserError(f"{str(path)!r} is truncated: {len(data)} bytes, shorter than an idx header")
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:
        raise UserError(f"{str(path)!r} is not an unsigned-byte idx file (magic {magic:#010x})")
    ndim = magic & 0xFF
    if not 1 <= ndim <= 4 or len(data) < 4 + 4 * ndim:
        raise UserError(f"{str(path)!r} is corrupt: its header gives {ndim} dimensions in a file of {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise UserError(f"{str(path)!r} is truncated: header says {shape}, found {arr.size} bytes")
    return arr.reshape(shape)


def _check_split(arr: dict, files: dict, split: str) -> None:
    x, y = arr[f"{split}_images"], arr[f"{split}_labels"]
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise UserError(f"{str(files[f'{split}_images'])!r} holds images of shape {x.shape[1:]}, not 28x28")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise UserError(f"{str(files[f'{split}_labels'])!r} holds {y.shape} labels for {x.shape[0]} images")
    if y.size and y.max() >= len(CLASSES):
        raise UserError(f"{str(files[f'{split}_labels'])!r} has label {y.max()}, outside 0..{len(CLASSES) - 1}")


def _find(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs(root: Path, explicit: bool = False) -> list[Path]:
    """Where the files are looked for; a ``data.root`` the user gave (``explicit``) is not replaced by the system
    copy behind their back."""
    own = [root, root / "fashion_mnist", root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    return own if explicit else [*own, SYSTEM_DIR]


def find_files(root: Path, explicit: bool = False) -> Optional[dict[str, Path]]:
    for d in candidate_dirs(root, explicit):
        found = {k: _find(d, v) for k, v in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def download(root: Path) -> None:
    """torchvision's downloader: writes ``root/FashionMNIST/raw/*``."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)
    FashionMNIST(str(root), train=False, download=True)


@DATASETS.register("fashion_mnist")
def fashion_mnist(cfg, root: Path) -> TensorSource:
    explicit = cfg.root is not None
    files = find_files(root, explicit)
    expected = " ".join(v + "[.gz]" for v in FILES.values())
    if files is None and cfg.download:
        try:
            download(root)
        except Exception as e:  # offline, proxy, disk: say what to do instead
            raise missing("fashion_mnist", root, expected,
                          f"the download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                          "put the files there or set data.root") from None
        files = find_files(root, explicit)
    if files is None:
        raise missing("fashion_mnist", root, expected,
                      f"also looked in {', '.join(str(d) for d in candidate_dirs(root, explicit)[1:])}; set data.root "
                      "to the folder that holds them" + ("" if explicit else " or data.download=true"))
    arr = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        _check_split(arr, files, split)
    return TensorSource(
        name="fashion_mnist", num_classes=10, mean=MEAN, std=STD,
        train_images=torch.from_numpy(arr["train_images"].copy()).unsqueeze(1),
        train_labels=torch.from_numpy(arr["train_labels"].astype(np.int64)),
        test_images=torch.from_numpy(arr["test_images"].copy()).unsqueeze(1),
        test_labels=torch.from_numpy(arr["test_labels"].astype(np.int64)),
        augment=TensorAugment(crop_pad=2, flip=True), classes=list(CLASSES),
    )
