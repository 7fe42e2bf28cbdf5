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

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from ..config import validation_message
from ..errors import UserError
from ..registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")


@dataclass
class Batch:
    images: Tensor
    labels: Tensor
    index: Tensor | None = None  # position of each sample in the training set (CRD's memory bank needs it)


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
    train_labels: Tensor | None = None  # the label of every training sample, by Batch.index (CRD's negatives)


class MethodParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Method(nn.Module):
    """Base class of all training objectives."""

    Params: type[MethodParams] = MethodParams
    needs_teacher: bool = True
    #: why the method needs the teacher *model* (its features, its outputs on other views, the model itself), or
    #: None when the teacher's logits on the training view suffice: only then can the teacher be an indexed one
    #: (a teacher-output cache, an AID projection teacher)
    teacher_model_needed: str | None = None

    def __init__(self, student: nn.Module, teacher: nn.Module | None, params: MethodParams, ctx: MethodContext):
        super().__init__()
        name = self.method_name()
        if self.needs_teacher and teacher is None:
            raise UserError(f"method {name!r} needs a teacher: set teacher.name and teacher.checkpoint")
        if self.teacher_model_needed and getattr(teacher, "indexed", False):
            raise UserError(f"method {name!r} {self.teacher_model_needed}, but this teacher serves fixed per-sample "
                            "logits (a teacher-output cache: set teacher.cache=false; an AID projection: use a logit "
                            "method)")
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
        teacher-output cache) sets ``indexed = True`` and is called with the batch's sample indices."""
        if getattr(self.teacher, "indexed", False):
            if batch.index is None:
                raise UserError("this teacher serves per-sample targets and needs sample indices in every batch")
            return self.teacher(batch.images, batch.index)
        return self.teacher(batch.images)

    def forward(self, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:  # pragma: no cover
        raise NotImplementedError


def build_method(name: str, student, teacher, params: dict | None, ctx: MethodContext) -> Method:
    cls = METHODS.get(name)
    try:
        p = cls.Params(**(params or {}))
    except ValidationError as e:
        raise UserError(f"bad parameters for method {name!r}: {validation_message(e, cls.Params)}") from None
    return cls(student, teacher, p, ctx)
