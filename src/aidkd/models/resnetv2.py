"""ImageNet-style ResNets adapted to CIFAR: ResNet18, ResNet34, ResNet50.

The architecture of RepDistiller / mdistiller ``models/cifar/resnetv2.py`` (kuangliu's pytorch-cifar ResNet: a
3x3 stride-1 stem without max-pooling, 4 stages at widths 64-512 and strides 1, 2, 2, 2), with the same
parameter and buffer names (``conv1``, ``layer1.0.shortcut.0``, ``linear``) so published checkpoints load.

Features: ``feats = [stem, stage1, ..., stage4]`` (post-ReLU), ``preact_feats`` the stages before the final
ReLU of their last block, ``pooled`` the global average of stage 4.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Features, KDModel
from .registry import check_kwargs, register_model
from .resnet import Stage, run_stages


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        preact = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(preact), preact


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = _shortcut(in_planes, self.expansion * planes, stride)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        preact = self.bn3(self.conv3(out)) + self.shortcut(x)
        return F.relu(preact), preact


class CifarResNetV2(KDModel):
    def __init__(self, block, num_blocks: list[int], num_classes: int = 100, in_chans: int = 3, input_hw: int = 32,
                 zero_init_residual: bool = False):
        super().__init__()
        self.input_size = (in_chans, input_hw, input_hw)
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # each residual branch starts at zero, so every block starts as the identity
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes: int, num_blocks: int, stride: int) -> Stage:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return Stage(*layers)

    def forward_with_features(self, x: Tensor) -> Features:
        x = F.relu(self.bn1(self.conv1(x)))
        x, feats, pre = run_stages(x, (self.layer1, self.layer2, self.layer3, self.layer4))
        pooled = self.avgpool(x).flatten(1)
        return Features(self.linear(pooled), feats, pre, pooled)

    def get_classifier(self) -> nn.Module:
        return self.linear


def _resnetv2(name: str, block, num_blocks: list[int]):
    @register_model(name)
    def build(num_classes=100, in_chans=3, input_hw=32, zero_init_residual=False, **kw):
        check_kwargs(name, kw, ["zero_init_residual"])
        return CifarResNetV2(block, num_blocks, num_classes, in_chans, input_hw, zero_init_residual)

    build.__name__ = name
    build.__doc__ = f"CIFAR {name} ({block.__name__} x {num_blocks}, 3x3 stem, no max-pool)."
    return build


ResNet18 = _resnetv2("ResNet18", BasicBlock, [2, 2, 2, 2])
ResNet34 = _resnetv2("ResNet34", BasicBlock, [3, 4, 6, 3])
ResNet50 = _resnetv2("ResNet50", Bottleneck, [3, 4, 6, 3])
