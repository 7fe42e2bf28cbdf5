"""ShuffleNetV1 for CIFAR: ``ShuffleV1`` (groups 3, stage widths 240-480-960).

The architecture of RepDistiller / mdistiller ``models/cifar/ShuffleNetv1.py`` (a 1x1 stem to 24 channels, three
stages of 4-8-4 bottlenecks whose first block halves the size and concatenates an average-pooled shortcut),
with the same parameter and buffer names (``layer1.0.conv1``, ``linear``) so published checkpoints load.
Pooling is adaptive (the published ``avg_pool2d(4)`` at 32x32), so other input sizes work.

Features: ``feats = [stem, stage1, stage2, stage3]`` (post-ReLU; 24, 240, 480, 960 channels at 32, 16, 8, 4
pixels for a 32x32 input), ``preact_feats`` the stages before the final ReLU of their last block, ``pooled`` the
global average of stage 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Features, KDModel
from .registry import check_kwargs, register_model
from .resnet import Stage, run_stages


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """[N, g*c, H, W] -> [N, c*g, H, W]: interleave the channels of the ``groups`` groups."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleBlock(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups)


class Bottleneck(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1; stride 2 concatenates a pooled shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid_planes = int(out_planes / 4)
        g = 1 if in_planes == 24 else groups  # the first block after the 24-channel stem is not grouped
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.shuffle1 = ShuffleBlock(groups=g)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1, groups=mid_planes,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2 else nn.Sequential()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.shuffle1(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        preact = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return F.relu(preact), preact


class ShuffleNetV1(KDModel):
    def __init__(self, out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups: int = 3, num_classes: int = 100,
                 in_chans: int = 3, input_hw: int = 32):
        super().__init__()
        self.input_size = (in_chans, input_hw, input_hw)
        self.conv1 = nn.Conv2d(in_chans, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _make_layer(self, out_planes: int, num_blocks: int, groups: int) -> Stage:
        layers = []
        for i in range(num_blocks):
            stride = 2 if i == 0 else 1
            cat_planes = self.in_planes if i == 0 else 0  # the first block concatenates its input
            layers.append(Bottleneck(self.in_planes, out_planes - cat_planes, stride=stride, groups=groups))
            self.in_planes = out_planes
        return Stage(*layers)

    def forward_with_features(self, x: Tensor) -> Features:
        x = F.relu(self.bn1(self.conv1(x)))
        x, feats, pre = run_stages(x, (self.layer1, self.layer2, self.layer3))
        pooled = self.avgpool(x).flatten(1)
        return Features(self.linear(pooled), feats, pre, pooled)

    def get_classifier(self) -> nn.Module:
        return self.linear


@register_model("ShuffleV1")
def shufflev1(num_classes=100, in_chans=3, input_hw=32, **kw):
    """CIFAR ShuffleNetV1, groups 3 (RepDistiller/mdistiller ``ShuffleV1``)."""
    check_kwargs("ShuffleV1", kw)
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, num_classes, in_chans, input_hw)
