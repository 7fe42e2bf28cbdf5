"""The model zoo. ``create_model(name, num_classes=..., in_chans=...)`` is the one entry point.

Families (one file each): CIFAR ResNets (``resnet.py``), CIFAR ResNet18/34/50 (``resnetv2.py``), WRNs
(``wrn.py``), VGGs (``vgg.py``), MobileNetV2 (``mobilenetv2.py``), ShuffleNetV1/V2 (``shufflenetv1.py``,
``shufflenetv2.py``), small test CNNs (``small.py``), ImageNet models and any torchvision/timm classifier
(``imagenet.py``, through ``hooked.py``). Weights: :func:`load_weights` (``checkpoint.py``). The table of every
model: :func:`model_table` (``table.py``). See docs/models.md.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from . import imagenet, mobilenetv2, resnet, resnetv2, reused_head, shufflenetv1, shufflenetv2, small, vgg, wrn  # noqa: F401
from .base import Features, KDModel, num_params
from .checkpoint import LoadReport, extract_state_dict, load_weights, read_checkpoint
from .hooked import HookedModel, auto_stage_paths
from .registry import ALIASES, FAMILY, MODELS, canonical_name, register_model
from .table import count_macs, model_table


def create_model(name: str, num_classes: int = 100, in_chans: int = 3, input_hw: int | None = None,
                 pretrained: bool | str | Path = False, **kwargs) -> KDModel:
    """Build a model by name.

    ``name`` is a registered name (``list_models()``), or ``tv:<name>`` / ``timm:<name>`` for any torchvision or
    timm classifier. ``input_hw`` is the input side the model is built for (default: 32 for the CIFAR zoo, 224
    for ImageNet models). ``pretrained=True`` loads published ImageNet weights (torchvision/timm models only)
    from the local cache, ``pretrained=<directory>`` from that folder (never a download:
    :mod:`aidkd.models.pretrained`); ``pretrained=<file>`` loads a checkpoint (``.pt`` or ``.safetensors``)
    with :func:`load_weights`. Other keyword arguments go to the
    builder (e.g. ``width_mult`` for MobileNetV2); an unknown one is a UserError that lists the accepted ones.
    """
    if input_hw is not None:
        kwargs["input_hw"] = input_hw
    path = None
    if isinstance(pretrained, (str, Path)) and not Path(pretrained).expanduser().is_dir():
        path, pretrained = pretrained, False  # a file: loaded below; a directory: the builder's weights cache
    try:
        if name.startswith(("tv:", "timm:")):
            model = imagenet.build_external(name, num_classes, in_chans, pretrained=pretrained, **kwargs)
        else:
            builder = MODELS.get(name)
            if getattr(builder, "supports_pretrained", False):
                kwargs["pretrained"] = pretrained
            elif pretrained:
                raise UserError(f"model {name!r} has no published pretrained weights to download; give a trained "
                                "checkpoint instead (pretrained=<path>, or model.checkpoint / teacher.checkpoint)")
            model = builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:
        raise UserError(f"model {name!r} does not accept these options ({e}); check model.kwargs") from None
    model.arch = canonical_name(name)
    if path is not None:
        load_weights(model, path)
    return model


def build_model(section, spec) -> KDModel:
    """The model a config section names (the student's ``model`` or a ``teacher``: ``name``, ``kwargs``,
    ``in_chans``, ``pretrained``, ``checkpoint``), built for the data of ``spec`` (a :class:`~aidkd.data.DataSpec`)
    with its checkpoint's weights loaded."""
    in_chans = getattr(section, "in_chans", None) or spec.input_size[0]
    kwargs = dict(section.kwargs)
    if getattr(section, "pretrained", False):
        kwargs["pretrained"] = section.pretrained
    model = create_model(section.name, num_classes=spec.num_classes, in_chans=in_chans, input_hw=spec.input_size[1],
                         **kwargs)
    if section.checkpoint:
        load_weights(model, section.checkpoint)
    return model


def list_models(family: str | None = None) -> list[str]:
    """Registered model names (aliases included), optionally of one family (``cifar`` or ``imagenet``)."""
    if family is None:
        return MODELS.names()
    return [n for n in MODELS.names() if FAMILY.get(canonical_name(n), "cifar") == family]


__all__ = [
    "ALIASES", "FAMILY", "MODELS", "Features", "HookedModel", "KDModel", "LoadReport", "auto_stage_paths", "build_model",
    "canonical_name", "count_macs", "create_model", "extract_state_dict", "list_models", "load_weights",
    "model_table", "num_params", "read_checkpoint", "register_model",
]
