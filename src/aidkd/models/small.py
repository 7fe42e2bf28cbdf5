"""Small plain CNNs and an MLP: for tests, the embedded digits demo and CPU benchmarks.

``cnn`` is a stack of stages (conv-BN-ReLU, then a stride-2 conv-BN-ReLU for every later stage), one per
configured width (3 by default); ``cnn_tiny``/``cnn_mini``/``cnn_small``/``cnn_medium``/``cnn_large`` fix 3 widths,
``cnn_deep`` 4 and ``cnn_xl`` 5. ``mlp`` has one hidden layer and
no batch norm (used where a test needs a model whose output does not depend on the batch composition).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Features, KDModel
from .registry import check_kwargs, register_model


class PlainCNN(KDModel):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths=(16, 32, 64), input_hw: int = 32):
        super().__init__()
        self.input_size = (in_chans, input_hw, input_hw)
        w = list(widths)
        self.stem = nn.Sequential(nn.Conv2d(in_chans, w[0], 3, padding=1, bias=False), nn.BatchNorm2d(w[0]))
        self.stages = nn.ModuleList()
        prev = w[0]
        for i, width in enumerate(w):
            stride = 1 if i == 0 else 2
            self.stages.append(
                nn.ModuleDict(
                    {
                        "conv": nn.Conv2d(prev, width, 3, stride=stride, padding=1, bias=False),
                        "bn": nn.BatchNorm2d(width),
                    }
                )
            )
            prev = width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)

    def forward_with_features(self, x: Tensor) -> Features:
        x = torch.relu(self.stem(x))
        feats, pre = [x], [x]
        for st in self.stages:
            y = st["bn"](st["conv"](x))
            pre.append(y)
            x = torch.relu(y)
            feats.append(x)
        pooled = self.pool(x).flatten(1)
        return Features(self.fc(pooled), feats, pre, pooled)

    def get_classifier(self) -> nn.Module:
        return self.fc


class MLP(KDModel):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, hidden: int = 64, input_hw: int = 32):
        super().__init__()
        self.input_size = (in_chans, input_hw, input_hw)
        self.fc1 = nn.Linear(in_chans * input_hw * input_hw, hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward_with_features(self, x: Tensor) -> Features:
        h = torch.relu(self.fc1(x.flatten(1)))
        return Features(self.fc(h), [h], [h], h)

    def get_classifier(self) -> nn.Module:
        return self.fc


@register_model("cnn")
def cnn(num_classes=10, in_chans=3, widths=(16, 32, 64), input_hw=32, **kw):
    check_kwargs("cnn", kw, ["widths"])
    return PlainCNN(num_classes, in_chans, widths, input_hw)


def _fixed(name, widths):
    @register_model(name)
    def build(num_classes=10, in_chans=3, input_hw=32, **kw):
        check_kwargs(name, kw)
        return PlainCNN(num_classes, in_chans, widths, input_hw)

    build.__doc__ = f"Plain {len(widths)}-stage CNN of widths {widths}."
    return build


cnn_tiny = _fixed("cnn_tiny", (4, 8, 16))
cnn_mini = _fixed("cnn_mini", (6, 12, 24))
cnn_small = _fixed("cnn_small", (8, 16, 32))
cnn_medium = _fixed("cnn_medium", (16, 32, 64))
cnn_large = _fixed("cnn_large", (32, 64, 128))
# deeper stacks whose extra stages run at 4x4 and 2x2: many parameters at the compute of cnn_large (the
# Fashion-MNIST study's ladder up to several hundred times its students' size)
cnn_deep = _fixed("cnn_deep", (32, 64, 128, 256))
cnn_xl = _fixed("cnn_xl", (32, 64, 128, 320, 640))


@register_model("mlp")
def mlp(num_classes=10, in_chans=3, hidden=64, input_hw=32, **kw):
    check_kwargs("mlp", kw, ["hidden"])
    return MLP(num_classes, in_chans, hidden, input_hw)
