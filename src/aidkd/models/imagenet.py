"""ImageNet models: torchvision and timm classifiers by name, and the MobileNetV1 student of the KD papers.

* ``tv_resnet18``, ``tv_resnet34``, ``tv_resnet50``, ``tv_resnet101``, ``tv_resnet152``, ``tv_mobilenet_v2``:
  torchvision classifiers wrapped in a :class:`~aidkd.models.hooked.HookedModel`. For the ResNets the features
  are those of mdistiller's ImageNet ResNet: ``feats = [relu(bn1) stem at 1/2, layer1, ..., layer4]``, and
  ``preact_feats`` the same before their final ReLU (the input of the last block's ``relu``).
* ``tv:<name>`` and ``timm:<name>`` in :func:`aidkd.models.create_model`: any torchvision classifier
  (``torchvision.models.list_models(module=torchvision.models)``) or timm model. Stage paths come from a table
  (ResNet family, MobileNetV2), timm's ``feature_info``, or :func:`~aidkd.models.hooked.auto_stage_paths`;
  pass ``stage_paths=[...]`` (and ``preact_paths``, ``classifier``) to choose them yourself.
* ``MobileNetV1``: mdistiller's ``models/imagenet/mobilenetv1.py`` (student of ResNet50 -> MobileNetV1), same
  parameter names (``model.0.0.weight`` ... ``fc``), adaptive final pooling.

``pretrained=True`` (or a cache directory) loads the torchvision (``DEFAULT``) or timm weights from local disk
(:mod:`.pretrained`: the torch hub / Hugging Face cache, or the given folder); they are never downloaded, and a
missing file is a one-line :class:`~aidkd.errors.UserError` that says which file to put where.
With ``num_classes`` other than 1000 the pretrained classifier is replaced by a fresh one; with ``in_chans``
other than 3 the first convolution is adapted (summed for 1 channel, tiled and rescaled otherwise, as timm does).
timm is optional and imported only when a ``timm:`` model is asked for.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .base import Features, KDModel
from .hooked import HookedModel, auto_stage_paths, find_classifier
from .pretrained import timm_weights_file, torchvision_weights_file
from .registry import check_kwargs, register_model

IMAGENET_HW = 224


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def _adapt_input_conv(model: nn.Module, in_chans: int, pretrained: bool) -> None:
    """Replace the first 3-channel convolution by one taking ``in_chans`` channels."""
    for path, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            new = nn.Conv2d(in_chans, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                            m.bias is not None, m.padding_mode)
            if pretrained:
                with torch.no_grad():
                    w = m.weight
                    if in_chans == 1:
                        new.weight.copy_(w.sum(1, keepdim=True))
                    else:
                        reps = math.ceil(in_chans / 3)
                        new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_chans] * (3 / in_chans))
                    if m.bias is not None:
                        new.bias.copy_(m.bias)
            _set_module(model, path, new)
            return
    raise UserError(f"cannot adapt {type(model).__name__} to {in_chans} input channels: no 3-channel convolution found")


def _reset_classifier(model: nn.Module, num_classes: int, name: str) -> None:
    """Replace the last ``nn.Linear`` of the classifier by a fresh one with ``num_classes`` outputs."""
    found = find_classifier(model)
    if found is not None:
        path, clf = found
        linears = [(p, m) for p, m in clf.named_modules() if isinstance(m, nn.Linear)]
        if linears:
            sub, lin = linears[-1]
            _set_module(model, f"{path}.{sub}" if sub else path, nn.Linear(lin.in_features, num_classes))
            return
    raise UserError(f"cannot give the pretrained {name!r} {num_classes} classes: no linear classifier found; "
                    "use num_classes=1000 with pretrained weights")


# --- torchvision --------------------------------------------------------------------------------------------


def _tv_known_paths(name: str, model: nn.Module) -> tuple[list[str], list[str | None]] | None:
    """Stage and pre-activation paths for the torchvision families whose layout is known."""
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        stages = ["relu"] + [f"layer{i}" for i in range(1, 5)]
        pre = ["relu"] + [f"layer{i}.{len(getattr(model, f'layer{i}')) - 1}.relu" for i in range(1, 5)]
        return stages, pre
    if name == "mobilenet_v2":
        stages = ["features.0", "features.3", "features.6", "features.13", "features.17"]
        return stages, [None] * len(stages)
    return None


def build_torchvision(name: str, num_classes: int = 1000, in_chans: int = 3, input_hw: int = IMAGENET_HW,
                      pretrained: bool = False, stage_paths=None, preact_paths=None, classifier=None,
                      **kwargs) -> HookedModel:
    """Any torchvision classifier as a :class:`HookedModel`."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise UserError(f"unknown torchvision classifier {name!r}; choose one of: {', '.join(names)}")
    if pretrained:
        from .checkpoint import load_weights

        model = torchvision.models.get_model(name, weights=None, **kwargs)
        load_weights(model, torchvision_weights_file(name, pretrained))
        if num_classes != 1000:
            _reset_classifier(model, num_classes, name)
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if in_chans != 3:
        _adapt_input_conv(model, in_chans, pretrained)
    input_size = (in_chans, input_hw, input_hw)
    if stage_paths is None:
        known = _tv_known_paths(name, model)
        if known is not None:
            stage_paths, known_pre = known
            preact_paths = preact_paths if preact_paths is not None else known_pre
        else:
            stage_paths = auto_stage_paths(model, input_size, classifier)
    return HookedModel(model, stage_paths, preact_paths, classifier, input_size)


def _tv(reg_name: str, tv_name: str):
    @register_model(reg_name, family="imagenet")
    def build(num_classes=1000, in_chans=3, input_hw=IMAGENET_HW, pretrained=False, **kw):
        check_kwargs(reg_name, kw, ["pretrained", "stage_paths", "preact_paths", "classifier"])
        return build_torchvision(tv_name, num_classes, in_chans, input_hw, pretrained, **kw)

    build.__name__ = reg_name
    build.__doc__ = f"torchvision ``{tv_name}`` with mdistiller-style features (pretrained: torchvision DEFAULT)."
    build.supports_pretrained = True
    return build


tv_resnet18 = _tv("tv_resnet18", "resnet18")
tv_resnet34 = _tv("tv_resnet34", "resnet34")
tv_resnet50 = _tv("tv_resnet50", "resnet50")
tv_resnet101 = _tv("tv_resnet101", "resnet101")
tv_resnet152 = _tv("tv_resnet152", "resnet152")
tv_mobilenet_v2 = _tv("tv_mobilenet_v2", "mobilenet_v2")


# --- timm ---------------------------------------------------------------------------------------------------


def import_timm():
    try:
        import timm
    except ImportError:
        raise UserError("timm models need the optional dependency timm: pip install aidkd[timm]") from None
    return timm


def build_timm(name: str, num_classes: int = 1000, in_chans: int = 3, input_hw: int = IMAGENET_HW,
               pretrained: bool = False, stage_paths=None, preact_paths=None, classifier=None,
               **kwargs) -> HookedModel:
    """Any timm model as a :class:`HookedModel` (stage paths from timm's ``feature_info``)."""
    timm = import_timm()
    if not timm.is_model(name):
        raise UserError(f"unknown timm model {name!r}; list them with timm.list_models()")
    if pretrained:
        kwargs["pretrained_cfg_overlay"] = {"file": str(timm_weights_file(name, pretrained))}
    model = timm.create_model(name, pretrained=bool(pretrained), num_classes=num_classes, in_chans=in_chans, **kwargs)
    input_size = (in_chans, input_hw, input_hw)
    if stage_paths is None:
        info = getattr(model, "feature_info", None)
        paths = [d.get("module") for d in info] if isinstance(info, list) and info else []
        ok = True
        for p in paths:
            try:
                model.get_submodule(p)
            except (AttributeError, TypeError):
                ok = False
        stage_paths = paths if paths and ok else auto_stage_paths(model, input_size, classifier)
    return HookedModel(model, stage_paths, preact_paths, classifier, input_size)


def build_external(name: str, num_classes: int, in_chans: int, **kwargs) -> HookedModel:
    """``tv:<name>`` or ``timm:<name>``."""
    source, _, arch = name.partition(":")
    if source == "tv":
        return build_torchvision(arch, num_classes, in_chans, **kwargs)
    if source == "timm":
        return build_timm(arch, num_classes, in_chans, **kwargs)
    raise UserError(f"unknown model source {source!r} in {name!r}; use tv:<name> or timm:<name>")


# --- MobileNetV1 --------------------------------------------------------------------------------------------


def _conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


def _conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(KDModel):
    """MobileNetV1 (width 1) as in mdistiller's ImageNet model zoo.

    Features: ``feats = [stem (32 ch, 1/2), 128 ch 1/4, 256 ch 1/8, 512 ch 1/16, 1024 ch 1/32]`` (post-ReLU),
    ``preact_feats`` the same before the ReLU that ends each of those layers (mdistiller's ``preact_feats``;
    mdistiller has no stem feature), ``pooled`` the 1024-d global average.
    """

    STAGE_ENDS = (3, 5, 11, 13)  # feats[1:] are the outputs of these layers of ``model``

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, input_hw: int = IMAGENET_HW):
        super().__init__()
        self.input_size = (in_chans, input_hw, input_hw)
        self.model = nn.Sequential(
            _conv_bn(in_chans, 32, 2),
            _conv_dw(32, 64, 1),
            _conv_dw(64, 128, 2),
            _conv_dw(128, 128, 1),
            _conv_dw(128, 256, 2),
            _conv_dw(256, 256, 1),
            _conv_dw(256, 512, 2),
            _conv_dw(512, 512, 1),
            _conv_dw(512, 512, 1),
            _conv_dw(512, 512, 1),
            _conv_dw(512, 512, 1),
            _conv_dw(512, 512, 1),
            _conv_dw(512, 1024, 2),
            _conv_dw(1024, 1024, 1),
            nn.AdaptiveAvgPool2d(1),  # published: AvgPool2d(7) at 224x224
        )
        self.fc = nn.Linear(1024, num_classes)

    def forward_with_features(self, x: Tensor) -> Features:
        x = self.model[0](x)
        feats, pre = [x], [x]
        start = 1
        for end in self.STAGE_ENDS:
            for layer in self.model[start:end]:
                x = layer(x)
            for m in list(self.model[end])[:-1]:  # the last layer without its final ReLU
                x = m(x)
            pre.append(x)
            x = F.relu(x)
            feats.append(x)
            start = end + 1
        pooled = self.model[14](x).flatten(1)
        return Features(self.fc(pooled), feats, pre, pooled)

    def get_classifier(self) -> nn.Module:
        return self.fc


@register_model("MobileNetV1", family="imagenet")
def mobilenetv1(num_classes=1000, in_chans=3, input_hw=IMAGENET_HW, **kw):
    """MobileNetV1 for ImageNet (mdistiller ``MobileNetV1``; student of ResNet50 -> MobileNetV1)."""
    check_kwargs("MobileNetV1", kw)
    return MobileNetV1(num_classes, in_chans, input_hw)
