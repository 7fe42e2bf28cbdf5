"""The files stages exchange: models from checkpoints (engine-style checkpoints, published state dicts, AID
projection teachers). Their format, reading and writing are :mod:`aidkd.engine.checkpoint`'s."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..engine.checkpoint import FORMAT, checkpoint_config, read_checkpoint
from ..errors import UserError


def load_model(path: str | Path, spec, arch: str | None = None, kwargs: dict | None = None) -> nn.Module:
    """A model from a checkpoint file, built for the data of ``spec`` (a :class:`~aidkd.data.DataSpec`).

    An aidkd checkpoint names its architecture and options; ``arch`` overrides them and is needed for a
    published state dict. A projection teacher's file (:class:`~aidkd.aid.project.TargetTeacher`) is loaded as
    such (it serves the training split only)."""
    from ..aid.project import TargetTeacher
    from ..models import create_model, load_weights

    obj = read_checkpoint(path)
    if isinstance(obj, dict) and "log_targets" in obj and "temperature" in obj:
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
