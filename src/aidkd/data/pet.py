"""Oxford-IIIT Pet (Parkhi et al., CVPR 2012): 37 cat and dog breeds, read in the dataset's own layout::

    root/images/<Breed_name>_<n>.jpg
    root/annotations/trainval.txt      one image per line: "<image id> <class id 1..37> <species> <breed id>"
    root/annotations/test.txt

(``data.root``, or ``root/oxford-iiit-pet`` as the official archives unpack, or ``root/pet``). The standard split is
trainval (3,680 images) for training and test (3,669) for evaluation; ``data.val_split`` holds out from
trainval. Class names come from the image ids (``Abyssinian``, ``American_Bulldog``...), ordered by class id.
Training and evaluation use the ImageNet recipe at 224 pixels (RandomResizedCrop + flip; resize 256 + centre crop)
and ImageNet normalisation, so ImageNet-pretrained zoo models fine-tune on it directly. Nothing is downloaded:
unpack images.tar.gz and annotations.tar.gz from the dataset's site and set ``data.root``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .base import DATASETS, FolderSource, missing
from .folder import IMAGENET_MEAN, IMAGENET_STD, imagenet_transforms

NUM_CLASSES = 37
LAYOUT = "images/*.jpg and annotations/trainval.txt, annotations/test.txt (the Oxford-IIIT Pet archives, unpacked)"


def read_split(root: Path, split: str) -> list[tuple[str, int, str]]:
    """``(image path, label 0..36, class name)`` of every line of ``annotations/<split>.txt``; a malformed line,
    a class id out of range or a missing image is a one-line UserError naming the file and line."""
    listing = root / "annotations" / f"{split}.txt"
    out = []
    for n, line in enumerate(listing.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{listing}:{n}"
        if len(fields) < 2 or not fields[1].isdigit() or not 1 <= int(fields[1]) <= NUM_CLASSES:
            raise UserError(f"dataset 'oxford_pet': {where} is not '<image id> <class id 1..{NUM_CLASSES}> ...': "
                            f"{line.strip()[:80]!r}")
        image = root / "images" / f"{fields[0]}.jpg"
        if not image.is_file():
            raise UserError(f"dataset 'oxford_pet': {where} names {image.name}, which is not in {root / 'images'}")
        out.append((str(image), int(fields[1]) - 1, fields[0].rsplit("_", 1)[0]))
    if not out:
        raise UserError(f"dataset 'oxford_pet': {listing} lists no images")
    return out


def class_names(rows: list[tuple[str, int, str]]) -> list[str]:
    """The breed name of each class id, from the image ids (one name per id, or a UserError)."""
    names: dict[int, str] = {}
    for _, label, name in rows:
        if names.setdefault(label, name) != name:
            raise UserError(f"dataset 'oxford_pet': class id {label + 1} holds images of {names[label]!r} and {name!r}")
    return [names.get(i, f"class_{i + 1}") for i in range(NUM_CLASSES)]


@DATASETS.register("oxford_pet")
def oxford_pet(cfg, root: Path) -> FolderSource:
    for d in (root, root / "oxford-iiit-pet", root / "pet"):
        if (d / "annotations" / "trainval.txt").is_file() and (d / "annotations" / "test.txt").is_file():
            break
    else:
        raise missing("oxford_pet", root, LAYOUT, "Oxford-IIIT Pet is not downloaded here: get the archives from "
                      "the dataset's site and set data.root to the folder holding images/ and annotations/")
    train, test = read_split(d, "trainval"), read_split(d, "test")
    tr, te = imagenet_transforms()
    return FolderSource(
        name="oxford_pet", num_classes=NUM_CLASSES, mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(3, 224, 224),
        train_samples=[(p, y) for p, y, _ in train], test_samples=[(p, y) for p, y, _ in test],
        train_transform=tr, eval_transform=te, classes=class_names(train + test),
    )
