"""CIFAR VGGs with batch norm: vgg8, vgg11, vgg13, vgg16, vgg19.

The architecture of RepDistiller / mdistiller ``models/cifar/vgg.py`` (the ``*_bn`` builders, which both repos
register under the plain names): five conv blocks ``block0..block4`` separated by 2x2 max-pools, the last ReLU
of each block applied outside it, global average pooling and a single ``Linear(512, classes)`` named
``classifier``. Parameter and buffer names are the published ones, so their checkpoints load.

As published, there is no pooling between ``block3`` and ``block4`` at 32x32 input; the published code adds it
at 64x64 input (Tiny-ImageNet), and here at any input of 64 pixels or more, so ``block4`` always works on a map
of at most 1/16 of the input.

Features: ``feats = [block0, ..., block4]`` after their ReLU (block0 at full resolution), ``preact_feats`` the
same before it, ``pooled`` the global average of ``block4``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Features, KDModel, init_fan_out_normal
from .registry import check_kwargs, register_model

CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _make_block(widths: list[int], batch_norm: bool, in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in widths:
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers[:-1])  # the block's last ReLU is applied in forward (its input is the preact)


class VGG(KDModel):
    def __init__(self, cfg: list[list[int]], batch_norm: bool = True, num_classes: int = 100, in_chans: int = 3,
                 input_hw: int = 32):
        super().__init__()
        self.input_size = (in_chans, input_hw, input_hw)
        self.block0 = _make_block(cfg[0], batch_norm, in_chans)
        self.block1 = _make_block(cfg[1], batch_norm, cfg[0][-1])
        self.block2 = _make_block(cfg[2], batch_norm, cfg[1][-1])
        self.block3 = _make_block(cfg[3], batch_norm, cfg[2][-1])
        self.block4 = _make_block(cfg[4], batch_norm, cfg[3][-1])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(cfg[4][-1], num_classes)

        init_fan_out_normal(self)

    def forward_with_features(self, x: Tensor) -> Features:
        h = x.shape[2]
        x = F.relu(self.block0(x))
        feats, pre = [x], [x]
        for i, (pool, block) in enumerate(
            [(self.pool0, self.block1), (self.pool1, self.block2), (self.pool2, self.block3), (self.pool3, self.block4)]
        ):
            if i < 3 or h >= 64:
                x = pool(x)
            p = block(x)
            x = F.relu(p)
            pre.append(p)
            feats.append(x)
        pooled = self.pool4(x).flatten(1)
        return Features(self.classifier(pooled), feats, pre, pooled)

    def get_classifier(self) -> nn.Module:
        return self.classifier


def _vgg(name: str):
    @register_model(name)
    def build(num_classes=100, in_chans=3, input_hw=32, batch_norm=True, **kw):
        check_kwargs(name, kw, ["batch_norm"])
        return VGG(CFG[name], batch_norm, num_classes, in_chans, input_hw)

    build.__name__ = name
    build.__doc__ = f"CIFAR {name} with batch norm (RepDistiller/mdistiller ``{name}_bn``)."
    return build


vgg8 = _vgg("vgg8")
vgg11 = _vgg("vgg11")
vgg13 = _vgg("vgg13")
vgg16 = _vgg("vgg16")
vgg19 = _vgg("vgg19")
