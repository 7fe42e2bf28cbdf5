"""ShuffleNetV2 for CIFAR: ``ShuffleV2`` (net size 1: stage widths 116-232-464, 1024-d head).

The architecture of RepDistiller / mdistiller ``models/cifar/ShuffleNetv2.py`` (a 1x1 stem to 24 channels, three
stages of a down-sampling block plus 3-7-3 split/shuffle blocks, a 1x1 conv to 1024 channels), with the same
parameter and buffer names (``layer1.0.conv1`` ... ``conv2``, ``bn2``, ``linear``) so published checkpoints
load. Pooling is adaptive (the published ``avg_pool2d(4)`` at 32x32), so other input sizes work.

Features: ``feats = [stem, stage1, stage2, stage3]`` (24, 116, 232, 464 channels at 32, 16, 8, 4 pixels for a
32x32 input), ``preact_feats`` the stages before the ReLU of their last block's branch, ``pooled`` the 1024-d
average of the head conv. One deliberate difference: mdistiller returns that pre-activation *before* the channel
shuffle, so its channels are ordered differently from ``feats``; here it is shuffled like the output, so that
``relu(preact_feats[i]) == feats[i]`` as for every other model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .base import Features, KDModel
from .registry import check_kwargs, register_model
from .resnet import Stage, run_stages
from .shufflenetv1 import ShuffleBlock

CONFIGS = {
    0.2: {"out_channels": (40, 80, 160, 512), "num_blocks": (3, 3, 3)},
    0.3: {"out_channels": (40, 80, 160, 512), "num_blocks": (3, 7, 3)},
    0.5: {"out_channels": (48, 96, 192, 1024), "num_blocks": (3, 7, 3)},
    1: {"out_channels": (116, 232, 464, 1024), "num_blocks": (3, 7, 3)},
    1.5: {"out_channels": (176, 352, 704, 1024), "num_blocks": (3, 7, 3)},
    2: {"out_channels": (224, 488, 976, 2048), "num_blocks": (3, 7, 3)},
}


class BasicBlock(nn.Module):
    """Split the channels in half, transform one half (1x1 - depthwise 3x3 - 1x1), concatenate, shuffle."""

    def __init__(self, in_channels: int, split_ratio: float = 0.5):
        super().__init__()
        self.split_ratio = split_ratio
        c = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shuffle = ShuffleBlock(groups=2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = int(x.size(1) * self.split_ratio)
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        pre = self.bn3(self.conv3(out))
        out = self.shuffle(torch.cat([x1, F.relu(pre)], 1))
        preact = self.shuffle(torch.cat([x1, pre], 1))
        return out, preact


class DownBlock(nn.Module):
    """Two stride-2 branches (depthwise-pointwise and pointwise-depthwise-pointwise), concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        # left branch
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=1, groups=in_channels,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ShuffleBlock(groups=2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out1 = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        out2 = F.relu(self.bn3(self.conv3(x)))
        out2 = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(out2)))))
        out = self.shuffle(torch.cat([out1, out2], 1))
        return out, out


class ShuffleNetV2(KDModel):
    def __init__(self, net_size: float = 1, num_classes: int = 100, in_chans: int = 3, input_hw: int = 32):
        super().__init__()
        out_channels = CONFIGS[net_size]["out_channels"]
        num_blocks = CONFIGS[net_size]["num_blocks"]
        self.input_size = (in_chans, input_hw, input_hw)
        self.conv1 = nn.Conv2d(in_chans, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_channels[3], num_classes)

    def _make_layer(self, out_channels: int, num_blocks: int) -> Stage:
        layers: list[nn.Module] = [DownBlock(self.in_channels, out_channels)]
        layers += [BasicBlock(out_channels) for _ in range(num_blocks)]
        self.in_channels = out_channels
        return Stage(*layers)

    def forward_with_features(self, x: Tensor) -> Features:
        x = F.relu(self.bn1(self.conv1(x)))
        x, feats, pre = run_stages(x, (self.layer1, self.layer2, self.layer3))
        pooled = self.avgpool(F.relu(self.bn2(self.conv2(x)))).flatten(1)
        return Features(self.linear(pooled), feats, pre, pooled)

    def get_classifier(self) -> nn.Module:
        return self.linear


@register_model("ShuffleV2")
def shufflev2(num_classes=100, in_chans=3, input_hw=32, net_size=1, **kw):
    """CIFAR ShuffleNetV2 of net size 1 (RepDistiller/mdistiller ``ShuffleV2``); ``net_size`` picks another width."""
    check_kwargs("ShuffleV2", kw, ["net_size"])
    if net_size not in CONFIGS:
        raise UserError(f"ShuffleV2 net_size {net_size!r} is not one of {sorted(CONFIGS)}")
    return ShuffleNetV2(net_size, num_classes, in_chans, input_hw)
