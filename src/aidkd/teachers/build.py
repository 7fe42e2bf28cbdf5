"""The one constructor of a run's teacher: :func:`build_teacher` turns a config's ``teacher`` section into a served
:class:`~aidkd.teachers.base.Teacher` for the run's data and method.

* ``kind: logits``: a views file (a model's stored logits on the training split), :class:`ViewsTeacher`;
* ``kind: targets``: AID projection targets, :class:`TargetTeacher`;
* ``kind: model``: the architecture with its checkpoint or pretrained weights, :class:`ModelTeacher`, lean
  (``teacher.lean``) when the method uses only its logits, and read from the shared cache
  (:mod:`aidkd.teachers.cache`) when ``teacher.cache`` is ``views`` or ``sampled``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import RunConfig, TeacherConfig
from ..errors import UserError
from ..data.tensor_loader import TensorLoader
from ..models import build_model
from .base import FEATURES, WEIGHTS, Teacher
from .cache import serve_cached
from .model import ModelTeacher
from .targets import TargetTeacher
from .views import serve_views, spec_of_loader


def build_teacher(section: TeacherConfig, cfg: RunConfig, data, device: torch.device, dtype: torch.dtype | None,
                  needs: frozenset[str], *, is_main: bool = True, wait=lambda: None, log=print) -> Teacher | None:
    """The teacher ``section`` describes, served for the data ``data`` (a :class:`~aidkd.data.DataBundle`) of the
    run ``cfg`` on ``device``; None when it names no model. ``dtype`` is the run's autocast dtype (the cache's
    forward runs in it); ``needs``: what the method asks of its teacher (:meth:`aidkd.methods.Method.teacher_needs`):
    a method that needs no features nor weights gets a lean model, or the cache. Under DDP the main process builds
    a cache and the others ``wait``."""
    spec = data.spec
    if section.kind == "logits":
        _check_in_memory(data, cfg, "teacher.kind: logits")
        return serve_views(section.checkpoint, data.train, source=str(section.checkpoint),
                           num_classes=spec.num_classes)
    if section.kind == "targets":
        teacher = TargetTeacher.load(section.checkpoint)
        teacher.check_fits(spec.num_train, spec.num_classes, f"teacher.checkpoint {section.checkpoint!r}")
        return teacher.to(device)
    if section.name is None:
        if section.checkpoint:
            raise UserError("teacher.checkpoint is set but teacher.name is not; set teacher.name to its architecture")
        return None
    if not section.checkpoint and not section.pretrained:
        raise UserError(f"teacher {section.name!r} has no weights: set teacher.checkpoint to a trained teacher's "
                        "checkpoint")
    model = build_model(section, spec).to(device).eval()
    return serve_model(model, section, cfg, data, device, dtype, needs, is_main=is_main, wait=wait, log=log)


def serve_model(model: nn.Module, section: TeacherConfig, cfg: RunConfig, data, device: torch.device,
                dtype: torch.dtype | None, needs: frozenset[str], *, is_main: bool = True, wait=lambda: None,
                log=print) -> Teacher:
    """A loaded teacher model (on ``device``, eval mode) served as ``section`` says: lean, or from the shared cache,
    where the method's ``needs`` allow (the arguments are :func:`build_teacher`'s)."""
    source = str(section.checkpoint or section.name)
    uses_logits_only = not needs & {FEATURES, WEIGHTS}
    if section.cache != "off" and not uses_logits_only:
        what = "features" if FEATURES in needs else "weights, which it trains"
        raise UserError(f"teacher.cache={section.cache}: method {cfg.method.name!r} needs the teacher's {what}, which a "
                        "logit cache cannot serve; set teacher.cache=off")
    lean = uses_logits_only and section.lean
    served = ModelTeacher(model, lean=lean, channels_last=lean and cfg.train.channels_last, source=source)
    if section.cache == "off":
        return served
    _check_in_memory(data, cfg, f"teacher.cache={section.cache}", " or teacher.cache=off")
    if section.cache == "sampled" and data.train.augment is None:
        raise UserError("teacher.cache=sampled replays stored augmented views, but data.augment is off; use "
                        "teacher.cache=views")
    views = spec_of_loader(data.train, section.cache, section.cache_views if section.cache == "sampled" else 0,
                           section.cache_topk, str(dtype).removeprefix("torch.") if dtype else "float32")
    return serve_cached(served, model, data.train, views, data.spec.num_classes, device, section.cache_budget_gb,
                        source=source, log=log, is_main=is_main, wait=wait)


def _check_in_memory(data, cfg: RunConfig, what: str, alternative: str = "") -> None:
    if not isinstance(data.train, TensorLoader):
        raise UserError(f"{what} needs an in-memory dataset; dataset {cfg.data.name!r} is read from files here: set "
                        f"data.in_memory=on{alternative}")


__all__ = ["build_teacher", "serve_model"]
