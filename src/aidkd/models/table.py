"""The model table: parameters, MACs and feature shapes of every registered model (``aidkd models``)."""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import UserError
from .base import num_params, probe_input
from .registry import ALIASES, FAMILY, MODELS

DEFAULT_HW = {"cifar": 32, "imagenet": 224}


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass of one image: FLOPs / 2 as counted by ``FlopCounterMode``.

    Convolutions and matrix products are counted; BatchNorm, activations, pooling and additions are not (the
    convention of the published tables).
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        x = probe_input(model, input_size)
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def _row(name: str, num_classes: int, in_chans: int, input_hw: int | None) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from . import create_model

    family = FAMILY.get(ALIASES.get(name, name), "cifar")
    hw = input_hw or DEFAULT_HW.get(family, 32)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, input_hw=hw)
    size = (in_chans, hw, hw)
    model.eval()
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            out = model.forward_with_features(torch.zeros(1, *size))
    return {
        "name": name,
        "family": family,
        "aliases": sorted(a for a, c in ALIASES.items() if c == name),
        "params": num_params(model),
        "macs": int(counter.get_total_flops()) // 2,
        "input_size": list(size),
        "feats": [list(f.shape[1:]) for f in out.feats],
        "preact_feats": [list(f.shape[1:]) for f in out.preact_feats],
        "pooled": list(out.pooled.shape[1:]),
        "num_classes": int(out.logits.shape[1]),
    }


def model_table(num_classes: int = 100, in_chans: int = 3, input_hw: int | None = None, names=None,
                family: str = "cifar") -> list[dict]:
    """One row per model: name, family, aliases, params, MACs (per image), input size, feature shapes.

    ``names`` picks models (any registered name or alias, in that order); otherwise every registered model of
    ``family`` (``'cifar'``: the 32x32 zoo and the small test models; ``'imagenet'``; ``'all'``), aliases
    left out. ``input_hw`` defaults to 32 for CIFAR models and 224 for ImageNet ones. A model that cannot run
    at the asked size is left out of a family listing with a warning; a named one raises a UserError. The
    global random state is left as it was.
    """
    if family not in ("cifar", "imagenet", "all"):
        raise UserError(f"unknown model family {family!r}; choose one of: cifar, imagenet, all")
    explicit = names is not None
    if not explicit:
        kinds = ("cifar", "imagenet") if family == "all" else (family,)  # composites need their parts: not listed
        names = [n for n in MODELS.names() if n not in ALIASES and FAMILY.get(n, "cifar") in kinds]
    rows = []
    with torch.random.fork_rng(devices=[]):
        for name in names:
            MODELS.get(name)  # an unknown name is a UserError listing the known ones
            try:
                rows.append(_row(name, num_classes, in_chans, input_hw))
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - e.g. an input too small for the architecture
                if explicit:
                    raise UserError(f"model {name!r} cannot run at {in_chans}x{input_hw}x{input_hw}: {e}") from None
                warnings.warn(f"model table: {name} left out ({type(e).__name__}: {e})", stacklevel=2)
    return rows
