"""The model zoo. ``create_model(name, num_classes=..., in_chans=...)`` is the one entry point."""
from __future__ import annotations

from torch import nn

from ..errors import UserError
from . import small  # noqa: F401  (registers models)
from .base import Features, KDModel, num_params
from .registry import MODELS


def create_model(name: str, num_classes: int = 100, in_chans: int = 3, input_hw: int | None = None, **kwargs) -> KDModel:
    """Build a registered model by name."""
    builder = MODELS.get(name)
    if input_hw is not None:
        kwargs["input_hw"] = input_hw
    try:
        return builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:
        raise UserError(f"model {name!r} does not accept these options ({e}); check model.kwargs") from None


def list_models() -> list[str]:
    return MODELS.names()


__all__ = ["MODELS", "Features", "KDModel", "create_model", "list_models", "num_params"]
