"""CIFAR ResNets of the KD literature: resnet8 ... resnet110, resnet8x4, resnet32x4.

The architecture of RepDistiller / mdistiller ``models/cifar/resnet.py`` (He et al.'s CIFAR ResNet with 3 stages
of BasicBlocks; the ``x4`` variants have 4x wider stages and a 32-channel stem), with the same parameter and
buffer names, so their published ``cifar_teachers`` checkpoints load unchanged.

Features: ``feats = [stem, stage1, stage2, stage3]`` (post-ReLU), ``preact_feats`` the same stages before the
final ReLU of their last block (mdistiller's ``preact_feats``), ``pooled`` the global average of stage 3.
The one difference from the published code: global *adaptive* average pooling, so any input size works (it
equals their ``AvgPool2d(8)`` at 32x32).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Features, KDModel
from .registry import check_kwargs, register_model


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus shortcut; returns ``(relu(sum), sum)``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        preact = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(preact), preact


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck (expansion 4); returns ``(relu(sum), sum)``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        preact = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(preact), preact


class Stage(nn.Sequential):
    """A sequence of blocks that each return ``(out, preact)``; returns the last block's pair.

    A ``Sequential`` subclass so that parameter names stay ``layer1.0.conv1.weight`` as in the published code.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        pre = x
        for block in self:
            x, pre = block(x)
        return x, pre


def run_stages(x: Tensor, stages) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Run the stem output ``x`` through stages that return ``(out, preact)``; return the last output and the
    feature lists of the contract (stem first, then every stage's output / pre-activation)."""
    feats, pre = [x], [x]
    for stage in stages:
        x, p = stage(x)
        feats.append(x)
        pre.append(p)
    return x, feats, pre


class CifarResNet(KDModel):
    """He et al.'s CIFAR ResNet: a 3x3 stem and 3 stages of ``n`` blocks at strides 1, 2, 2."""

    def __init__(self, depth: int, num_filters: list[int], block_name: str = "basicblock", num_classes: int = 100,
                 in_chans: int = 3, input_hw: int = 32):
        super().__init__()
        if block_name.lower() == "basicblock":
            assert (depth - 2) % 6 == 0, "with BasicBlock the depth is 6n+2 (20, 32, 44, 56, 110, ...)"
            n, block = (depth - 2) // 6, BasicBlock
        elif block_name.lower() == "bottleneck":
            assert (depth - 2) % 9 == 0, "with Bottleneck the depth is 9n+2 (29, 47, 56, 110, ...)"
            n, block = (depth - 2) // 9, Bottleneck
        else:
            raise ValueError("block_name is 'basicblock' or 'bottleneck'")
        self.input_size = (in_chans, input_hw, input_hw)
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(in_chans, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.layer1 = self._make_layer(block, num_filters[1], n)
        self.layer2 = self._make_layer(block, num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(block, num_filters[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(num_filters[3] * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> Stage:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return Stage(*layers)

    def forward_with_features(self, x: Tensor) -> Features:
        x = F.relu(self.bn1(self.conv1(x)))
        x, feats, pre = run_stages(x, (self.layer1, self.layer2, self.layer3))
        pooled = self.avgpool(x).flatten(1)
        return Features(self.fc(pooled), feats, pre, pooled)

    def get_classifier(self) -> nn.Module:
        return self.fc


def _resnet(name: str, depth: int, filters: list[int]):
    @register_model(name)
    def build(num_classes=100, in_chans=3, input_hw=32, **kw):
        check_kwargs(name, kw)
        return CifarResNet(depth, filters, "basicblock", num_classes, in_chans, input_hw)

    build.__name__ = name
    build.__doc__ = f"CIFAR ResNet-{depth}, stage widths {filters[1:]} (RepDistiller/mdistiller ``{name}``)."
    return build


resnet8 = _resnet("resnet8", 8, [16, 16, 32, 64])
resnet14 = _resnet("resnet14", 14, [16, 16, 32, 64])
resnet20 = _resnet("resnet20", 20, [16, 16, 32, 64])
resnet32 = _resnet("resnet32", 32, [16, 16, 32, 64])
resnet44 = _resnet("resnet44", 44, [16, 16, 32, 64])
resnet56 = _resnet("resnet56", 56, [16, 16, 32, 64])
resnet110 = _resnet("resnet110", 110, [16, 16, 32, 64])
resnet8x4 = _resnet("resnet8x4", 8, [32, 64, 128, 256])
resnet32x4 = _resnet("resnet32x4", 32, [32, 64, 128, 256])
