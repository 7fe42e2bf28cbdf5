"""What a distillation method is to the engine.

A method is an ``nn.Module`` that owns the student and its own learnable parts (connectors, a temperature, a
memory bank) as submodules, and holds the frozen teacher *outside* its module tree: the teacher is never in the
method's ``state_dict``, never moved by ``method.to``, never wrapped in DDP, and always runs in eval mode
without gradients. ``forward(batch, epoch)`` returns the student's logits and a dict of named, already weighted
loss terms; the engine minimises their sum and logs each.

Adding a method is one file: a pure loss function in ``aidkd.losses`` and a thin subclass here, registered
with ``@METHODS.register("name")`` and carrying a pydantic ``Params`` class with the published defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from ..errors import UserError
from ..registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")


@dataclass
class Batch:
    images: Tensor
    labels: Tensor
    index: Tensor | None = None  # position of each sample in the training set (CRD's memory bank needs it)
    #: which view of each sample the images are (``aidkd.data.augment.decode_views``); set by the training
    #: loader, None for any other images (e.g. a method's own extra view)
    view: Tensor | None = None


@dataclass
class MethodContext:
    """What a method may know about the run besides the models."""

    num_classes: int
    input_size: tuple[int, int, int]
    num_train: int = 0  # training-set size
    epochs: int = 1
    steps_per_epoch: int = 1
    mean: tuple[float, ...] = ()  # normalisation of the images the method receives
    std: tuple[float, ...] = ()
    extra: dict = field(default_factory=dict)


class MethodParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Method(nn.Module):
    """Base class of all training objectives."""

    Params: type[MethodParams] = MethodParams
    needs_teacher: bool = True
    #: what the method needs of its teacher: "logits" (a teacher-output cache can serve them), "features" (the
    #: model's intermediate features), or "training" (it updates the teacher's weights)
    teacher_use: str = "logits"

    def __init__(self, student: nn.Module, teacher: nn.Module | None, params: MethodParams, ctx: MethodContext):
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise UserError(f"method {self.method_name()!r} needs a teacher: set teacher.name and teacher.checkpoint")
        self.student = student
        self.params = params
        self.ctx = ctx
        object.__setattr__(self, "teacher", teacher)  # deliberately not a submodule
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

    @classmethod
    def method_name(cls) -> str:
        return getattr(cls, "registered_name", cls.__name__.lower())

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_features(self, images: Tensor):
        return self.teacher.forward_features(images)

    @torch.no_grad()
    def teacher_logits(self, batch: Batch) -> Tensor:
        """The teacher's logits for a batch. A teacher that serves fixed per-sample targets (AID's projection, a
        teacher-output cache) sets ``indexed = True`` and is called with the batch's sample indices; one that
        serves per-view targets (the view cache) also sets ``per_view = True`` and gets the batch's view ids."""
        if getattr(self.teacher, "indexed", False):
            if batch.index is None:
                raise UserError("this teacher serves per-sample targets and needs sample indices in every batch")
            if getattr(self.teacher, "per_view", False):
                return self.teacher(batch.images, batch.index, batch.view)
            return self.teacher(batch.images, batch.index)
        return self.teacher(batch.images)

    def forward(self, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:  # pragma: no cover
        raise NotImplementedError


def build_method(name: str, student, teacher, params: dict | None, ctx: MethodContext) -> Method:
    cls = METHODS.get(name)
    try:
        p = cls.Params(**(params or {}))
    except Exception as e:  # pydantic.ValidationError
        raise UserError(f"bad parameters for method {name!r}: {_short_validation(e)}") from None
    return cls(student, teacher, p, ctx)


def _short_validation(e: Exception) -> str:
    errs = getattr(e, "errors", None)
    if callable(errs):
        parts = []
        for err in errs():
            loc = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg')}")
        return "; ".join(parts)
    return str(e)
