"""MobileNetV2 for CIFAR: ``MobileNetV2`` (alias ``mobile_half``), width 0.5 and expansion 6 by default.

The architecture of RepDistiller / mdistiller ``models/cifar/mobilenetv2.py`` (``mobile_half`` =
``mobilenetv2_T_w(6, 0.5)``): a stride-2 3x3 stem, seven inverted-residual groups, a 1x1 conv to 1280
channels and one ``Linear`` in ``classifier.0``; parameter and buffer names are the published ones. Width and
expansion ratio are configurable (``width_mult``, ``expand_ratio``). The published code asserts a multiple of
32 as input size and pools with a fixed kernel; here pooling is adaptive, so 28x28 and 64x64 inputs work.

Features (mdistiller's choice of stages): ``feats = [stem, after group 1, group 2, group 4, group 6]``, which at
width 0.5 have 16, 12, 16, 48, 160 channels at 16, 16, 8, 4, 2 pixels for a 32x32 input; groups end in a linear
(no-ReLU) projection, so ``preact_feats`` are the same tensors. ``pooled`` is the 1280-d average of the head conv.
"""
from __future__ import annotations

from torch import Tensor, nn

from .base import Features, KDModel, init_fan_out_normal
from .registry import check_kwargs, register_model


def conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


def conv_1x1_bn(inp: int, oup: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection, with a residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        assert stride in (1, 2)
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(KDModel):
    # t (expansion; None = the model's expand_ratio), c (width), n (blocks), s (stride of the first block)
    SETTING = [[1, 16, 1, 1], [None, 24, 2, 1], [None, 32, 3, 2], [None, 64, 4, 2], [None, 96, 3, 1],
               [None, 160, 3, 2], [None, 320, 1, 1]]
    FEATURE_GROUPS = (1, 2, 4, 6)  # feats[1:] are the outputs of these groups

    def __init__(self, expand_ratio: int = 6, num_classes: int = 100, width_mult: float = 0.5, in_chans: int = 3,
                 input_hw: int = 32):
        super().__init__()
        self.input_size = (in_chans, input_hw, input_hw)
        input_channel = int(32 * width_mult)
        self.conv1 = conv_bn(in_chans, input_channel, 2)
        self.blocks = nn.ModuleList([])
        widths = []
        for t, c, n, s in self.SETTING:
            out = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(input_channel, out, stride, expand_ratio if t is None else t))
                input_channel = out
            self.blocks.append(nn.Sequential(*layers))
            widths.append(out)
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_1x1_bn(input_channel, self.last_channel)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        self.avgpool = nn.AdaptiveAvgPool2d(1)

        init_fan_out_normal(self)

    def forward_with_features(self, x: Tensor) -> Features:
        x = self.conv1(x)
        feats = [x]
        for i, group in enumerate(self.blocks):
            x = group(x)
            if i in self.FEATURE_GROUPS:
                feats.append(x)
        pooled = self.avgpool(self.conv2(x)).flatten(1)
        return Features(self.classifier(pooled), feats, list(feats), pooled)

    def get_classifier(self) -> nn.Module:
        return self.classifier[0]


@register_model("MobileNetV2", aliases=("mobile_half",))
def mobilenetv2(num_classes=100, in_chans=3, input_hw=32, width_mult=0.5, expand_ratio=6, **kw):
    """CIFAR MobileNetV2, width 0.5 and expansion 6 by default (the KD papers' ``mobile_half``)."""
    check_kwargs("MobileNetV2", kw, ["width_mult", "expand_ratio"])
    return MobileNetV2(expand_ratio, num_classes, width_mult, in_chans, input_hw)
