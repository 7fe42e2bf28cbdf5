"""Wide ResNets for CIFAR: wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2.

The architecture of RepDistiller / mdistiller ``models/cifar/wrn.py`` (Zagoruyko & Komodakis' pre-activation
WRN-d-k), with the same parameter and buffer names (``block1.layer.0.bn1``, ``convShortcut``, final ``bn1``,
``fc``) so published checkpoints load.

Features follow mdistiller: in a pre-activation network a stage ends with a residual sum, not a ReLU, so
``feats = [stem conv, stage1, stage2, stage3]`` are the raw stage outputs, and ``preact_feats`` are those
outputs after the BatchNorm that the next block (or the final ``bn1``) applies before its ReLU. mdistiller
recomputes those BatchNorms a second time after the forward pass, which in train mode updates their running
statistics twice; here they are taken from inside the forward pass, so the numbers are the same and the
BatchNorm statistics are updated once. ``pooled`` is the global average of ``relu(bn1(stage3))``.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Features, KDModel
from .registry import check_kwargs, register_model


class BasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv-BN-ReLU-conv plus (projection) shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (
            None if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward_with_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The block's output and ``bn1(x)``, the pre-activation of its input."""
        pre = self.bn1(x)
        act = F.relu(pre)
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # the published block adds the *activated* input on projection blocks and the raw input otherwise
        shortcut = x if self.equal_in_out else self.convShortcut(act)
        return shortcut + out, pre

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_preact(x)[0]


class NetworkBlock(nn.Module):
    """One stage: ``nb_layers`` blocks, the first one changing width and stride (named ``layer`` as published)."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
            for i in range(nb_layers)
        ])

    def forward_with_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The stage output and ``bn1`` of the stage *input* (the previous stage's pre-activation)."""
        x, pre = self.layer[0].forward_with_preact(x)
        for block in self.layer[1:]:
            x = block(x)
        return x, pre

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(KDModel):
    def __init__(self, depth: int, num_classes: int = 100, widen_factor: int = 1, drop_rate: float = 0.0,
                 in_chans: int = 3, input_hw: int = 32):
        super().__init__()
        assert (depth - 4) % 6 == 0, "the depth of a WRN is 6n+4"
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.input_size = (in_chans, input_hw, input_hw)
        self.conv1 = nn.Conv2d(in_chans, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch[3], num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward_with_features(self, x: Tensor) -> Features:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2, f1_pre = self.block2.forward_with_preact(f1)
        f3, f2_pre = self.block3.forward_with_preact(f2)
        f3_pre = self.bn1(f3)
        pooled = self.avgpool(F.relu(f3_pre)).flatten(1)
        return Features(self.fc(pooled), [f0, f1, f2, f3], [f0, f1_pre, f2_pre, f3_pre], pooled)

    def get_classifier(self) -> nn.Module:
        return self.fc


def _wrn(name: str, depth: int, widen: int):
    @register_model(name)
    def build(num_classes=100, in_chans=3, input_hw=32, drop_rate=0.0, **kw):
        check_kwargs(name, kw, ["drop_rate"])
        return WideResNet(depth, num_classes, widen, drop_rate, in_chans, input_hw)

    build.__name__ = name
    build.__doc__ = f"Wide ResNet WRN-{depth}-{widen} (RepDistiller/mdistiller ``{name}``)."
    return build


wrn_16_1 = _wrn("wrn_16_1", 16, 1)
wrn_16_2 = _wrn("wrn_16_2", 16, 2)
wrn_40_1 = _wrn("wrn_40_1", 40, 1)
wrn_40_2 = _wrn("wrn_40_2", 40, 2)
