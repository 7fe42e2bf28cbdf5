"""The model registry, plus the little bookkeeping the zoo needs around it.

``@register_model("name", family="cifar", aliases=(...))`` registers a builder in :data:`MODELS` under its name
and every alias, and records the model's family (``cifar`` for the 32x32 zoo and the small test CNNs,
``imagenet`` for the 224x224 models), which :func:`aidkd.models.model_table` uses to pick rows.
"""
from __future__ import annotations

from typing import Callable, Iterable

from ..errors import UserError
from ..registry import Registry

MODELS = Registry("model")

#: canonical name -> family ("cifar" or "imagenet")
FAMILY: dict[str, str] = {}
#: alias -> canonical name (e.g. "mobile_half" -> "MobileNetV2")
ALIASES: dict[str, str] = {}


def register_model(name: str, family: str = "cifar", aliases: Iterable[str] = ()) -> Callable:
    """Register a builder ``f(num_classes=..., in_chans=..., input_hw=..., **kw)`` under ``name`` and aliases."""

    def deco(fn: Callable) -> Callable:
        MODELS.register(name)(fn)
        FAMILY[name] = family
        for alias in aliases:
            MODELS.register(alias)(fn)
            ALIASES[alias] = name
        return fn

    return deco


def canonical_name(name: str) -> str:
    """The registered name an alias stands for (the name itself if it is no alias)."""
    return ALIASES.get(name, name)


def check_kwargs(model: str, kw: dict, allowed: Iterable[str] = ()) -> None:
    """Reject options a builder does not know, naming them and the ones it accepts."""
    extra = sorted(set(kw) - set(allowed))
    if extra:
        accepted = ", ".join(["num_classes", "in_chans", "input_hw", *allowed])
        raise UserError(f"model {model!r} does not accept option(s) {', '.join(map(repr, extra))}; "
                        f"it accepts: {accepted}")
