"""Tiny ImageNet (CS231n): 64x64 colour images of 200 classes, 100000 training / 10000 validation.

Layout (the unpacked ``tiny-imagenet-200.zip``), under ``data.root`` or ``root/tiny-imagenet-200``::

    wnids.txt                        the 200 class ids (optional: else the train/ folder names)
    words.txt                        wnid <tab> names (optional, for class names)
    train/<wnid>/images/*.JPEG
    val/images/*.JPEG
    val/val_annotations.txt          file <tab> wnid <tab> box...

The test loader reads val/ (the official test/ has no labels). Read from files by default; with
``data.in_memory=on`` all images are decoded once into a tensor on the device (about 1.2 GB) and augmented
there. Augmentation: random crop 64 with zero padding 8 + horizontal flip.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import UserError
from .augment import TensorAugment
from .base import DATASETS, FolderSource, missing

MEAN, STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
LAYOUT = "tiny-imagenet-200/{train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt}"
EXTS = (".jpeg", ".jpg", ".png")


def find_dir(root: Path) -> Optional[Path]:
    for d in (root / "tiny-imagenet-200", root):
        if (d / "train").is_dir() and (d / "val" / "val_annotations.txt").is_file():
            return d
    return None


def download(root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(URL, str(root))


def _transforms():
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose([T.RandomCrop(64, padding=8), T.RandomHorizontalFlip(), *norm]), T.Compose(norm)


def read_layout(d: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[str], list[str]]:
    """(train samples, val samples, wnids, class names)."""
    if (d / "wnids.txt").is_file():
        wnids = sorted(w.strip() for w in (d / "wnids.txt").read_text().split() if w.strip())
    else:
        wnids = sorted(p.name for p in (d / "train").iterdir() if p.is_dir())
    index = {w: i for i, w in enumerate(wnids)}
    train = []
    for w in wnids:
        folder = d / "train" / w / "images"
        if folder.is_dir():
            train += [(str(p), index[w]) for p in sorted(folder.iterdir()) if p.suffix.lower() in EXTS]
    val = []
    for line in (d / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1] in index:
            val.append((str(d / "val" / "images" / parts[0]), index[parts[1]]))
    names = wnids
    if (d / "words.txt").is_file():
        words = dict(line.split("\t", 1) for line in (d / "words.txt").read_text().splitlines() if "\t" in line)
        names = [words.get(w, w).split(",")[0].strip() for w in wnids]
    return train, val, wnids, names


@DATASETS.register("tiny_imagenet")
def tiny_imagenet(cfg, root: Path) -> FolderSource:
    d = find_dir(root)
    if d is None and cfg.download:
        try:
            download(root)
        except Exception as e:
            raise missing("tiny_imagenet", root, LAYOUT, f"the download failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); unpack {URL} there or set data.root") from None
        d = find_dir(root)
    if d is None:
        raise missing("tiny_imagenet", root, LAYOUT, f"unpack {URL} there, set data.root, or data.download=true")
    try:
        train, val, wnids, names = read_layout(d)
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"dataset 'tiny_imagenet': the text files in {str(d)!r} (wnids.txt, words.txt, "
                        f"val/val_annotations.txt) are not the dataset's ({type(e).__name__}); unpack {URL} again") from None
    if not train or not val:
        raise missing("tiny_imagenet", d, LAYOUT, f"found {len(train)} training and {len(val)} validation images")
    tr, ev = _transforms()
    return FolderSource(
        name="tiny_imagenet", num_classes=len(wnids), mean=MEAN, std=STD, input_size=(3, 64, 64),
        train_samples=train, test_samples=val, train_transform=tr, eval_transform=ev, classes=names,
        memory_hw=64, memory_augment=TensorAugment(crop_pad=8, flip=True),
    )
