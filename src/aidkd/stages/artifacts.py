"""The files stages exchange: models from checkpoints, engine-style checkpoints of models held in memory, AID
projection teachers."""
from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from ..engine.checkpoint import FORMAT, save_checkpoint
from ..errors import UserError


def load_model(path: str | Path, spec, arch: str | None = None, kwargs: dict | None = None) -> nn.Module:
    """A model from a checkpoint file, built for the data of ``spec`` (a :class:`~aidkd.data.DataSpec`).

    An aidkd checkpoint names its architecture and options; ``arch`` overrides them and is needed for a
    published state dict. A projection teacher's file (:class:`~aidkd.aid.project.TargetTeacher`) is loaded as
    such (it serves the training split only)."""
    from ..models import create_model, load_weights
    from ..models.checkpoint import read_checkpoint
    from ..aid.project import TargetTeacher

    obj = read_checkpoint(path)
    if isinstance(obj, dict) and "log_targets" in obj and "temperature" in obj:
        return TargetTeacher(obj["log_targets"], obj["temperature"], obj.get("meta"))
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


def checkpoint_config(path: str | Path) -> dict | None:
    """The run config stored in an aidkd checkpoint (a dict), or None."""
    from ..models.checkpoint import read_checkpoint

    obj = read_checkpoint(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT and isinstance(obj.get("config"), str):
        return json.loads(obj["config"])
    return None


def save_model_checkpoint(model: nn.Module, path: str | Path, arch: str, spec, model_kwargs: dict, config: dict,
                          epoch: int, extra: dict | None = None) -> None:
    """Write ``model`` as an engine-style aidkd checkpoint (loadable as ``teacher.checkpoint``, by ``aidkd
    eval`` and by :func:`~aidkd.models.load_weights`)."""
    ck = {
        "format": FORMAT, "arch": arch, "num_classes": spec.num_classes, "in_chans": spec.input_size[0],
        "input_hw": spec.input_size[1], "model_kwargs": dict(model_kwargs),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": json.dumps(config), "epoch": int(epoch),
    }
    if extra:
        ck.update(extra)
    save_checkpoint(ck, path)


def save_target_teacher(teacher, path: str | Path) -> None:
    """:meth:`TargetTeacher.save`, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        teacher.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


__all__ = ["checkpoint_config", "load_model", "save_model_checkpoint", "save_target_teacher"]
