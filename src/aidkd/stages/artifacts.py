"""The files stages exchange: models from checkpoints (engine-style checkpoints, published state dicts, AID
projection teachers). Their format, reading and writing are :mod:`aidkd.files.checkpoint`'s."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import UserError
from ..files.checkpoint import FORMAT, checkpoint_config, read_checkpoint
from ..models import create_model, load_weights
from ..teachers import TargetTeacher


def load_model(path: str | Path, spec, arch: str | None = None, kwargs: dict | None = None) -> nn.Module:
    """A model from a checkpoint file, built for the data of ``spec`` (a :class:`~aidkd.data.DataSpec`).

    An aidkd checkpoint names its architecture and options; ``arch`` overrides them and is needed for a
    published state dict. A projection teacher's file (:class:`~aidkd.teachers.TargetTeacher`) is loaded as
    such (it serves the training split only)."""
    obj = read_checkpoint(path)
    if TargetTeacher.is_targets_file(obj):
        return TargetTeacher.load(path)
    kw = dict(kwargs or {})
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if arch is None or arch == obj.get("arch"):
            kw = {**dict(obj.get("model_kwargs") or {}), **kw}
        arch = arch or obj["arch"]
    elif arch is None:
        raise UserError(f"{str(path)!r} is not an aidkd checkpoint: give its architecture name")
    model = create_model(arch, num_classes=spec.num_classes, in_chans=spec.input_size[0],
                         input_hw=spec.input_size[1], **kw)
    load_weights(model, obj, strict=True)
    return model


__all__ = ["checkpoint_config", "load_model"]
