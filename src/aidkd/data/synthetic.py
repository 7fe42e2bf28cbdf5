"""``synthetic``: random but learnable images, generated from a fixed seed, for tests and smoke runs.

10 classes, 3x32x32, 1024 training / 256 test images, balanced. Each class has a smooth random template (a 4x4
pattern per channel, upsampled); an image is its class template at a random contrast plus pixel noise, so a
small CNN learns it within a few epochs while a single pixel says little. No files. Augmentation: random crop
with zero padding 2 (no flip: templates are not mirror-symmetric).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .augment import TensorAugment
from .base import DATASETS, TensorSource


def make_synthetic(num_classes: int = 10, channels: int = 3, hw: int = 32, num_train: int = 1024,
                   num_test: int = 256, seed: int = 0, signal: float = 0.12, noise: float = 0.2) -> TensorSource:
    """Generate the dataset (same arguments -> same tensors)."""
    g = torch.Generator().manual_seed(seed)
    templates = F.interpolate(torch.randn(num_classes, channels, 4, 4, generator=g), size=(hw, hw),
                              mode="bilinear", align_corners=False)
    templates = templates / templates.flatten(1).std(dim=1).view(-1, 1, 1, 1)

    def split(n: int):
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        contrast = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)
        x = 0.5 + signal * contrast * templates[y] + noise * torch.randn(n, channels, hw, hw, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    xtr, ytr = split(num_train)
    xte, yte = split(num_test)
    f = xtr.float() / 255
    mean = tuple(round(v, 4) for v in f.mean(dim=(0, 2, 3)).tolist())
    std = tuple(round(v, 4) for v in f.std(dim=(0, 2, 3)).tolist())
    return TensorSource(
        name="synthetic", num_classes=num_classes, mean=mean, std=std, train_images=xtr, train_labels=ytr,
        test_images=xte, test_labels=yte, augment=TensorAugment(crop_pad=2, flip=False),
        classes=[f"class{i}" for i in range(num_classes)],
    )


@DATASETS.register("synthetic")
def synthetic(cfg, root: Path) -> TensorSource:
    return make_synthetic()
