"""ImageNet and any ImageFolder tree, read from files by the DataLoader pipeline (:mod:`aidkd.data.folder`).

Layout (torchvision ImageFolder: one folder per class, class index = position in sorted folder names)::

    root/train/<class>/*.{jpg,jpeg,png,...}
    root/val/<class>/*.{jpg,jpeg,png,...}      (the test loader reads val/; data.val_split holds out from train/)

``imagenet`` looks in ``data.root``, ``root/imagenet`` and ``root/ILSVRC2012``; its ``val/`` must be sorted
into class folders (e.g. with the usual ``valprep.sh``). ``imagefolder`` takes ``data.root`` as the tree itself
(a ``test/`` folder is used when there is no ``val/``). Neither downloads. Augmentation: RandomResizedCrop 224
+ horizontal flip; evaluation: resize 256 + center crop 224; ImageNet normalisation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import UserError
from .base import DATASETS, FolderSource, missing
from .folder import IMAGENET_MEAN, IMAGENET_STD, image_folder_samples, imagenet_transforms

LAYOUT = "an ImageFolder tree train/<class>/*.jpg and val/<class>/*.jpg"


def _has_classes(d: Path) -> bool:
    return d.is_dir() and any(p.is_dir() for p in d.iterdir())


def _eval_dir(root: Path) -> Optional[Path]:
    for name in ("val", "test"):
        if _has_classes(root / name):
            return root / name
    return None


def folder_source(name: str, root: Path) -> FolderSource:
    """A :class:`FolderSource` of ``root/train`` and ``root/val`` (or ``root/test``) with the ImageNet recipe."""
    ev = _eval_dir(root)
    if not _has_classes(root / "train") or ev is None:
        raise missing(name, root, LAYOUT, "set data.root to the folder that holds train/ and val/")
    train, classes = image_folder_samples(root / "train")
    if not train:
        raise missing(name, root / "train", "images (.jpg, .jpeg, .png, ...) in one folder per class")
    eval_classes = [p.name for p in ev.iterdir() if p.is_dir()]
    extra = sorted(set(eval_classes) - set(classes))
    if extra:
        raise UserError(f"dataset {name!r}: {ev} has class folders that train/ lacks: {', '.join(extra[:5])}"
                        + (" ..." if len(extra) > 5 else ""))
    test, _ = image_folder_samples(ev, {c: i for i, c in enumerate(classes)})
    tr, te = imagenet_transforms()
    return FolderSource(
        name=name, num_classes=len(classes), mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(3, 224, 224),
        train_samples=train, test_samples=test, train_transform=tr, eval_transform=te, classes=classes,
    )


@DATASETS.register("imagenet")
def imagenet(cfg, root: Path) -> FolderSource:
    for d in (root, root / "imagenet", root / "ILSVRC2012"):
        if _has_classes(d / "train") and _eval_dir(d) is not None:
            return folder_source("imagenet", d)
    raise missing("imagenet", root, LAYOUT, "val/ sorted into class folders (valprep.sh); also looked in "
                  f"{root / 'imagenet'} and {root / 'ILSVRC2012'}; ImageNet is not downloaded, set data.root")


@DATASETS.register("imagefolder")
def imagefolder(cfg, root: Path) -> FolderSource:
    if cfg.root is None:
        raise UserError(f"dataset 'imagefolder' needs data.root: the folder holding {LAYOUT}")
    return folder_source("imagefolder", root)
