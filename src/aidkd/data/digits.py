"""scikit-learn's 8x8 handwritten digits (1797 images, 10 classes): the dataset of smoke tests and quick runs.

No files: it ships with scikit-learn. Values 0..16 are scaled to 0..255. Fixed class-stratified split of 1437
training / 360 test images. Augmentation: a random shift of up to 1 pixel (crop with zero padding 1), no flip
(digits are not mirror-symmetric).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .augment import TensorAugment
from .base import DATASETS, TensorSource
from .sampling import stratified_split

MEAN, STD = (0.3056,), (0.3760,)  # of the 1437 training images
NUM_TEST = 360
SPLIT_SEED = 0


@DATASETS.register("digits")
def digits(cfg, root: Path) -> TensorSource:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    train, test = stratified_split(y, NUM_TEST / len(y), seed=SPLIT_SEED)
    return TensorSource(
        name="digits", num_classes=10, mean=MEAN, std=STD,
        train_images=x[train], train_labels=y[train], test_images=x[test], test_labels=y[test],
        augment=TensorAugment(crop_pad=1, flip=False), classes=[str(i) for i in range(10)],
    )
