"""The feature contract every aidkd model speaks.

Every model is an ``nn.Module`` whose ``forward(x)`` returns logits, and whose ``forward_with_features(x)`` returns a
:class:`Features`: the logits, the list of stage features (post-activation), the pre-activation stage features
where the architecture defines them (otherwise the post-activation ones again), and the pooled feature before
the classifier. ``feats[0]`` is the stem output and ``feats[1:]`` are the stage outputs, deepest last.
Distillation methods rely only on this contract, so every method works with every model. (The name differs from
timm's ``forward_features``, which returns the last unpooled feature map of a timm model: aidkd wraps timm models,
so it keeps the two apart.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class Features:
    logits: Tensor
    feats: list[Tensor]
    preact_feats: list[Tensor]
    pooled: Tensor


class KDModel(nn.Module):
    """Base class: subclasses implement :meth:`forward_with_features`."""

    #: the input size (C, H, W) the model was built for; set by the constructor
    input_size: tuple[int, int, int] = (3, 32, 32)

    def forward_with_features(self, x: Tensor) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_features(x).logits

    def get_classifier(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def feature_info(self, input_size: tuple[int, int, int] | None = None) -> dict:
        """Shapes (without the batch dimension) of every output of :meth:`forward_with_features`.

        Runs one forward pass on a zero tensor in eval mode, on the model's device and in its dtype (float64 and
        bf16 models too); the model's train/eval state is restored afterwards.
        """
        size = tuple(input_size or self.input_size)
        was_training = self.training
        self.eval()
        try:
            out = self.forward_with_features(probe_input(self, size))
        finally:
            self.train(was_training)
        return {
            "logits": tuple(out.logits.shape[1:]),
            "feats": [tuple(f.shape[1:]) for f in out.feats],
            "preact_feats": [tuple(f.shape[1:]) for f in out.preact_feats],
            "pooled": tuple(out.pooled.shape[1:]),
        }


def probe_input(model: nn.Module, size: tuple[int, ...]) -> Tensor:
    """A zero batch of one input of shape ``size`` on the model's device and in its floating dtype (the default
    dtype for a model without floating parameters)."""
    p = next((q for q in model.parameters() if q.is_floating_point()), None)
    if p is None:
        return torch.zeros(1, *size)
    return torch.zeros(1, *size, device=p.device, dtype=p.dtype)


def init_fan_out_normal(model: nn.Module) -> None:
    """The initialisation of the published CIFAR VGG and MobileNetV2: convolutions N(0, 2/fan_out), batch norms
    (1, 0), linear layers N(0, 0.01) with zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / fan))
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 0.01)
            m.bias.data.zero_()


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
