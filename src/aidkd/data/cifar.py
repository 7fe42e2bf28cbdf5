"""CIFAR-10 and CIFAR-100: 32x32 colour images, 50000 training / 10000 test, 10 or 100 classes.

Files: the "python version" archives from https://www.cs.toronto.edu/~kriz/cifar.html unpacked under
``data.root`` (torchvision's on-disk layout, where ``data.download`` puts them)::

    root/cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta}
    root/cifar-100-python/{train, test, meta}

Each file is a pickle of a dict: ``data`` (N x 3072 uint8, R then G then B planes of 32x32), ``labels``
(CIFAR-10) or ``fine_labels`` (CIFAR-100). The files are read with :class:`SafeUnpickler`, which builds only what
these files hold (dicts, lists, str/bytes, numbers and numpy ``uint8`` arrays): a pickle that asks for anything
else (the way a crafted file runs code) is refused as unsafe, naming the file. A damaged file (not a pickle,
wrong keys, wrong shape, labels out of range) is a one-line error naming the file too. Augmentation: random crop with zero padding 4 + horizontal flip;
normalisation with the constants of the common KD codebases (CRD, mdistiller).
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import UserError
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


class UnsafePickle(Exception):
    """A pickle asked for a global that a CIFAR batch file never holds."""


def _dtype(name, *args):
    if str(name) not in ("u1", "uint8"):
        raise UnsafePickle(f"numpy.dtype({name!r})")
    return np.dtype("u1")


def _reconstruct(cls, *args):
    if cls is not np.ndarray:
        raise UnsafePickle(f"numpy array reconstruction of {cls!r}")
    return np.ndarray.__new__(np.ndarray, *args)


def _encode(text, encoding="utf-8"):  # how protocol-2 pickles written by Python 3 store bytes
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickle("_codecs.encode with other arguments")
    return text.encode("latin1")


class SafeUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, str/bytes, numbers and numpy ``uint8`` arrays; any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _encode,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(f"{module}.{name}") from None


def load_pickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with ``str`` keys (the originals were written by Python 2), read safely."""
    try:
        raw = path.read_bytes()
        d = SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except UnsafePickle as e:
        raise UserError(f"{str(path)!r} is unsafe: the pickle asks for {e}, which a CIFAR batch file never holds; "
                        "refused to load it (delete it and download the dataset again)") from None
    except OSError as e:
        raise UserError(f"{str(path)!r} cannot be read ({e.strerror}); check the file's permissions") from None
    except Exception as e:  # any malformed pickle: truncated, garbage, wrong opcodes
        raise UserError(f"{str(path)!r} is corrupt: not a CIFAR batch pickle ({type(e).__name__}); download the "
                        "dataset again") from None
    if not isinstance(d, dict):
        raise UserError(f"{str(path)!r} is corrupt: it holds a {type(d).__name__}, not a dict of data and labels; "
                        "download the dataset again")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _read(files: list[Path], label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for p in files:
        d = load_pickle(p)
        for key in ("data", label_key):
            if key not in d:
                raise UserError(f"{str(p)!r} is corrupt: it has no {key!r} entry (keys: {', '.join(map(str, d))[:120]}); "
                                "download the dataset again")
        try:
            x = np.asarray(d["data"], dtype=np.uint8)
            y = np.asarray(d[label_key], dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{str(p)!r} is corrupt: 'data' or {label_key!r} is not an array of numbers") from None
        if x.ndim != 2 or x.shape[1] != 3072 or y.shape != (x.shape[0],):
            raise UserError(f"{str(p)!r} is corrupt: 'data' has shape {x.shape} and {label_key!r} {y.shape}; expected "
                            "(N, 3072) and (N,)")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise UserError(f"{str(p)!r} is corrupt: labels range {y.min()}..{y.max()}, outside 0..{num_classes - 1}")
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
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
    ncls = 10 if name == "cifar10" else 100
    xtr, ytr = _read([d / f for f in train], label_key, ncls)
    xte, yte = _read([d / f for f in test], label_key, ncls)
    classes = None
    if (d / meta).is_file():
        names = load_pickle(d / meta).get(names_key, [])
        classes = [str(c) for c in names] if isinstance(names, list) and len(names) == ncls else None
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return TensorSource(
        name=name, num_classes=ncls, mean=mean, std=std,
        train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte,
        augment=TensorAugment(crop_pad=4, flip=True), classes=classes,
    )


@DATASETS.register("cifar10")
def cifar10(cfg, root: Path) -> TensorSource:
    return load_cifar("cifar10", cfg, root)


@DATASETS.register("cifar100")
def cifar100(cfg, root: Path) -> TensorSource:
    return load_cifar("cifar100", cfg, root)
