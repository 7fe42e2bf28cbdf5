"""Loading weights into a model: aidkd checkpoints and published state dicts.

:func:`load_weights` accepts

* an aidkd checkpoint: a dict whose ``'model'`` holds the state dict, next to ``'arch'``, ``'num_classes'``...;
* a published checkpoint: the state dict under ``'model'`` (RepDistiller / mdistiller ``cifar_teachers``),
  ``'state_dict'`` or ``'net'``, or at the top level (torchvision, timm);

as a path or as an already loaded dict. Keys lose a ``module.`` prefix (``DataParallel``); for a
:class:`~aidkd.models.hooked.HookedModel` a state dict of the bare torchvision/timm network gains the wrapper's
``model.`` prefix; from a whole distiller's state dict (``student.*`` and ``teacher.*`` keys, as mdistiller saves
them) the student's part is taken. Files are read by :func:`aidkd.files.checkpoint.read_checkpoint`. A missing or
unreadable file, or weights that do not fit the model, raise a one-line :class:`~aidkd.errors.UserError` that
names the file and the first offending key with both shapes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from ..files.checkpoint import read_checkpoint
from ..errors import UserError
from .registry import canonical_name

STATE_DICT_KEYS = ("model", "state_dict", "net", "model_state_dict")


@dataclass
class LoadReport:
    """What :func:`load_weights` did: the keys it could not fill or use (all empty after a strict load)."""

    source: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def extract_state_dict(obj, source: str = "checkpoint") -> tuple[dict[str, Tensor], dict]:
    """The state dict inside a loaded checkpoint, and the checkpoint's other (metadata) entries."""
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict()), {}
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            sd = obj.get(key)
            if isinstance(sd, Mapping) and any(isinstance(v, Tensor) for v in sd.values()):
                meta = {k: v for k, v in obj.items() if k != key and isinstance(v, (str, int, float, bool))}
                return {k: v for k, v in sd.items() if isinstance(v, Tensor)}, meta
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj), {}
        keys = ", ".join(map(str, list(obj)[:8]))
        raise UserError(f"{source} holds no state dict: expected tensors at the top level or under "
                        f"'model', 'state_dict' or 'net' (its keys: {keys})")
    raise UserError(f"{source} holds a {type(obj).__name__}, not a state dict")


def _strip(sd: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def _align(sd: dict[str, Tensor], own: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop ``module.`` prefixes; add or drop the HookedModel's ``model.`` prefix when that fits better; take
    the ``student.`` part of a whole distiller's state dict (mdistiller saves those)."""
    sd = _strip(sd, "module.")
    candidates = [sd, {f"model.{k}": v for k, v in sd.items()}, _strip(sd, "model.")]
    if any(k.startswith("student.") for k in sd):
        candidates.append({k[len("student."):]: v for k, v in sd.items() if k.startswith("student.")})
    return max(candidates, key=lambda c: sum(k in own for k in c))


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ")"


def load_weights(model: nn.Module, path_or_state_dict, strict: bool = True) -> LoadReport:
    """Load weights from a file or a loaded checkpoint / state dict into ``model`` (see the module docstring).

    With ``strict=True`` (the default) every parameter and buffer of the model must be present with its shape
    and no other key may be left over, else a UserError; with ``strict=False`` the fitting tensors are loaded
    and the report lists the rest (e.g. a classifier of another class count).
    """
    if isinstance(path_or_state_dict, (str, Path)):
        source = f"checkpoint {str(path_or_state_dict)!r}"
        obj = read_checkpoint(path_or_state_dict)
    else:
        source = "the given state dict"
        obj = path_or_state_dict
    sd, meta = extract_state_dict(obj, source)
    own = model.state_dict()
    sd = _align(sd, own)

    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    mismatched = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if strict and (missing or unexpected or mismatched):
        if mismatched:
            k = mismatched[0]
            what = f"{k}: checkpoint {_shape(sd[k])} vs model {_shape(own[k])}"
        elif missing:
            what = f"missing key {missing[0]} (model {_shape(own[missing[0]])})"
        else:
            what = f"unexpected key {unexpected[0]} {_shape(sd[unexpected[0]])}"
        counts = f"{len(mismatched)} shape mismatches, {len(missing)} missing, {len(unexpected)} unexpected keys"
        hints = []
        arch, ck_arch = getattr(model, "arch", None), meta.get("arch")
        if arch and ck_arch and canonical_name(str(ck_arch)) != canonical_name(str(arch)):
            hints.append(f"the checkpoint is a {ck_arch!r}, the model a {arch!r}")
        try:
            ncls = getattr(model.get_classifier(), "out_features", None)
        except Exception:  # noqa: BLE001 - a model without get_classifier
            ncls = None
        if meta.get("num_classes") is not None and ncls is not None and meta["num_classes"] != ncls:
            hints.append(f"the checkpoint has {meta['num_classes']} classes, the model {ncls}")
        hint = f"; {'; '.join(hints)}" if hints else ""
        raise UserError(f"{source} does not fit {arch or type(model).__name__}: {what} ({counts}){hint}")

    fitting = {k: v for k, v in sd.items() if k in own and k not in mismatched}
    model.load_state_dict(fitting, strict=False)
    return LoadReport(source, missing, unexpected, mismatched, meta)
