"""What a distillation method is to the engine.

A method is an ``nn.Module`` that owns the student and its own learnable parts (connectors, a temperature, a
memory bank) as submodules, and holds the frozen teacher *outside* its module tree: the teacher is never in the
method's ``state_dict``, never moved by ``method.to``, never wrapped in DDP, and always runs in eval mode
without gradients. ``forward(batch, epoch)`` returns the student's logits and a dict of named, already weighted
loss terms; the engine minimises their sum and logs each.

Adding a method is one file: a pure loss function in ``aidkd.losses`` and a thin subclass here, registered
with ``@register_method("name")`` and carrying a pydantic ``Params`` class with the published defaults.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from ..config import validation_message
from ..data.base import Batch
from ..errors import UserError
from ..registry import Registry
from ..teachers import FEATURES, IMAGES, SPLIT, WEIGHTS, ModelTeacher, Teacher

METHODS: Registry[type["Method"]] = Registry("method")


@dataclass
class MethodContext:
    """What a method may know about the run besides the models."""

    num_classes: int
    input_size: tuple[int, int, int]
    num_train: int = 0  # training-set size
    epochs: int = 1
    steps_per_epoch: int = 1
    batch_size: int = 1  # the per-process training batch (SemCKD's attention is built for it)
    mean: tuple[float, ...] = ()  # normalisation of the images the method receives
    std: tuple[float, ...] = ()
    train_labels: Tensor | None = None  # the label of every training sample, by Batch.index (CRD's negatives)


class MethodParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Method(nn.Module):
    """Base class of all training objectives."""

    Params: type[MethodParams] = MethodParams
    registered_name: str = "method"  # set by register_method
    needs_teacher: bool = True
    #: what the method needs of its teacher: "logits" (a teacher-output cache or an AID projection teacher can
    #: serve them), "features" (the model's intermediate features), or "training" (it updates the teacher's weights)
    teacher_use: str = "logits"
    #: whether it also asks for the teacher's logits on views it makes itself (MLKD's strong augmentation), which a
    #: teacher of fixed per-sample targets cannot serve
    teacher_other_views: bool = False
    #: whether it learns from further guides beside the teacher (``assistants`` in a run config: DGKD)
    takes_assistants: bool = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None, params: MethodParams, ctx: MethodContext):
        super().__init__()
        name = self.method_name()
        if self.needs_teacher and teacher is None:
            raise UserError(f"method {name!r} needs a teacher: set teacher.name and teacher.checkpoint")
        teacher = None if teacher is None else as_teacher(teacher)
        missing = self.teacher_needs() - teacher.serves if teacher is not None else frozenset()
        if missing:
            raise UserError(f"method {name!r} {_why(missing)}, but this teacher serves fixed per-sample "
                            f"logits ({teacher.source}; a teacher-output cache: set teacher.cache=off; an AID "
                            "projection: use a logit method)")
        self.student = student
        self.params = params
        self.ctx = ctx
        object.__setattr__(self, "teacher", teacher)  # deliberately not a submodule
        object.__setattr__(self, "assistants", [])  # nor are the further guides
        if teacher is not None:
            freeze(teacher)

    def attach_assistants(self, assistants: list[nn.Module]) -> None:
        """Further frozen guides beside the teacher, largest first (only a method that ``takes_assistants``)."""
        if assistants and not self.takes_assistants:
            raise UserError(f"method {self.method_name()!r} learns from one teacher; remove the run's assistants "
                            "(they are DGKD's: method.name=dgkd)")
        guides = [as_teacher(a) for a in assistants]
        for a in guides:
            freeze(a)
        self.assistants[:] = guides

    @classmethod
    def method_name(cls) -> str:
        return cls.registered_name

    @classmethod
    def teacher_needs(cls) -> frozenset[str]:
        """What the method asks of its teacher (:mod:`aidkd.teachers.base`): the logits of its training batches,
        and its features, its weights or its outputs on other images where :attr:`teacher_use` and
        :attr:`teacher_other_views` say so."""
        extra = {"features": {FEATURES}, "training": {WEIGHTS}}.get(cls.teacher_use, set())
        return frozenset({SPLIT, *extra, *({IMAGES} if cls.teacher_other_views else set())})

    @classmethod
    def teacher_model_needed(cls) -> str | None:
        """Why the method needs the teacher model itself rather than fixed per-sample logits (its features, its
        weights, its outputs on other views), from :meth:`teacher_needs`; None when the logits suffice."""
        return _why(cls.teacher_needs())

    def train(self, mode: bool = True):
        super().train(mode)
        for guide in [self.teacher, *self.assistants]:
            if guide is not None:
                guide.eval()
        return self

    @torch.no_grad()
    def teacher_features(self, images: Tensor):
        return self.teacher.features(images)

    @torch.no_grad()
    def teacher_logits(self, batch: Batch, guide: Teacher | None = None) -> Tensor:
        """The teacher's (or another ``guide``'s) logits for a training batch (:meth:`Teacher.logits`)."""
        return (self.teacher if guide is None else guide).logits(batch)

    def forward(self, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def deployed_model(self, name: str, kwargs: dict) -> tuple[str, dict]:
        """The architecture and options that rebuild ``self.student`` from a checkpoint, given the run's
        ``model.name`` and ``model.kwargs``: the same for every method whose student is the configured model."""
        return name, kwargs


def freeze(model: nn.Module) -> None:
    """Eval mode and no gradients: how a method holds every model it learns from."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


#: what a method needs of its teacher beyond the logits of its training batches, in words, in the order asked
_NEED_WORDS = {FEATURES: "needs the teacher's features", WEIGHTS: "adapts the teacher model itself",
               IMAGES: "needs the teacher's outputs on views it augments itself"}


def _why(needs: frozenset[str]) -> str | None:
    """The first of ``needs`` beyond the training batches' logits, in words (None: nothing beyond them)."""
    return next((words for need, words in _NEED_WORDS.items() if need in needs), None)


def as_teacher(model: nn.Module) -> Teacher:
    """A served teacher as it is, a plain model as a :class:`~aidkd.teachers.ModelTeacher`."""
    return model if isinstance(model, Teacher) else ModelTeacher(model)


def model_label(model) -> str:
    if isinstance(model, Teacher) and model.model is not None:
        model = model.model
    return getattr(model, "model_name", None) or getattr(model, "name", None) or type(model).__name__


class FeatureMethod(Method):
    """A method on the models' intermediate features (FitNet, AT, ReviewKD, CRD): it needs the teacher model, and
    both models must follow the feature contract (``feature_info()``); the shape checks they share, each a
    UserError that names the method, the model and what is missing."""

    teacher_use = "features"

    def _role(self, role: str) -> nn.Module:
        return self.student if role == "student" else self.teacher.model

    def feature_info(self, role: str) -> dict:
        """``feature_info()`` of the student or the teacher at the run's input size."""
        model = self._role(role)
        if not hasattr(model, "feature_info"):
            raise UserError(f"method {self.method_name()!r}: the {role} {model_label(model)} has no feature_info(); "
                            "it needs a model that follows the aidkd feature contract")
        size = tuple(self.ctx.input_size) if self.ctx.input_size and len(self.ctx.input_size) == 3 else None
        return model.feature_info(size)

    def stage_shapes(self, role: str, key: str = "feats", min_stages: int = 1) -> list[tuple[int, int, int]]:
        """The (C, H, W) shapes of ``feature_info()[key][1:]`` (the stages after the stem)."""
        stages = [tuple(s) for s in self.feature_info(role)[key][1:]]
        if len(stages) < min_stages or any(len(s) != 3 for s in stages):
            raise UserError(
                f"method {self.method_name()!r}: the {role} {model_label(self._role(role))} has {len(stages)} "
                f"spatial stage feature(s) {stages}; it needs at least {min_stages} (C, H, W) stage outputs after "
                "the stem"
            )
        return stages

    def paired_stage_shapes(self, student_key: str, teacher_key: str) -> tuple[list, list]:
        """The stage shapes of both models, which must have as many stages (paired one to one)."""
        s, t = self.stage_shapes("student", student_key), self.stage_shapes("teacher", teacher_key)
        if len(s) != len(t):
            raise UserError(
                f"method {self.method_name()!r}: the student {model_label(self.student)} has {len(s)} stages and "
                f"the teacher {model_label(self.teacher)} {len(t)}; the method pairs the stages one to one"
            )
        return s, t

    def pooled_dim(self, role: str) -> int:
        """The size of the model's pooled feature, which must be a vector."""
        pooled = tuple(self.feature_info(role)["pooled"])
        if len(pooled) != 1:
            raise UserError(f"method {self.method_name()!r}: the {role} {model_label(self._role(role))}'s pooled "
                            f"feature has shape {pooled}; the method needs a vector")
        return pooled[0]


def register_method(name: str):
    """Register a :class:`Method` subclass in :data:`METHODS` under ``name``, which becomes its
    ``registered_name`` (the name in configs and messages)."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.registered_name = name
        return METHODS.register(name)(cls)

    return deco


def build_method(name: str, student, teacher, params: dict | None, ctx: MethodContext,
                 assistants: list[nn.Module] = ()) -> Method:
    cls = METHODS.get(name)
    try:
        p = cls.Params(**(params or {}))
    except ValidationError as e:
        raise UserError(f"bad parameters for method {name!r}: {validation_message(e, cls.Params)}") from None
    method = cls(student, teacher, p, ctx)
    method.attach_assistants(list(assistants))
    return method
