"""The teacher protocol: what a distillation method may ask of whatever serves its teacher.

A teacher is served in one of four ways, each a :class:`Teacher`:

* a frozen model (:class:`~aidkd.teachers.model.ModelTeacher`), lean or not;
* a model's stored logits on the views of the training split (:class:`~aidkd.teachers.views.ViewsTeacher`: the
  view cache of ``teacher.cache``, or a file served as ``teacher.kind: logits``), with the model beside it for
  images that are no view of the split, when there is one;
* AID's projected per-sample targets (:class:`~aidkd.teachers.targets.TargetTeacher`, ``teacher.kind: targets``).

Every teacher gives :meth:`Teacher.logits` of a training batch and declares in :attr:`Teacher.serves` what else it
can give: :data:`IMAGES` (logits of images that are no view of the training split: ``teacher(images)``),
:data:`FEATURES` (:meth:`Teacher.features`), :data:`WEIGHTS` (:attr:`Teacher.model`, a module whose weights a
method may train). A method states what it needs (:meth:`aidkd.methods.Method.teacher_needs`) and is refused in one
line when the teacher does not serve it; methods never ask a teacher what kind it is.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..data.base import Batch
from ..errors import UserError

SPLIT = "split"  #: logits of a training batch (its samples' indices and views): every teacher serves them
IMAGES = "images"  #: logits of any images
FEATURES = "features"  #: the model's intermediate features (the feature contract of aidkd.models)
WEIGHTS = "weights"  #: the model itself, whose weights a method may update


class Teacher(nn.Module):
    """A served teacher. Subclasses set :attr:`serves` and :attr:`source` and implement :meth:`logits`; the
    others refuse, in one line, what the teacher does not serve."""

    serves: frozenset[str] = frozenset({SPLIT})
    source: str = "teacher"  #: what serves the outputs, for messages
    model: nn.Module | None  #: the module that teaches, where there is one (set in __init__)

    def __init__(self):
        super().__init__()
        object.__setattr__(self, "model", None)  # a subclass with a model registers it as a submodule

    def logits(self, batch: Batch) -> Tensor:
        """The teacher's logits on a batch of the training loader (``batch.index`` and ``batch.view`` say which
        samples and views it holds)."""
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        """Logits of any images (:data:`IMAGES`)."""
        raise UserError(f"the teacher serves stored outputs ({self.source}) and cannot see images that are no view "
                        "of the training split; this needs teacher.kind: model")

    def features(self, images: Tensor):
        """The model's :class:`~aidkd.models.Features` of ``images`` (:data:`FEATURES`)."""
        raise UserError(f"this method needs the teacher's features, but the teacher serves per-sample outputs "
                        f"({self.source}); use a logit-based method or a teacher model (teacher.kind: model, "
                        "teacher.cache: off)")


class TableTeacher(Teacher):
    """A teacher of fixed per-sample logits, one row per training sample (``table``); subclasses say how the
    logits of samples ``index`` are made (:meth:`logits_at`)."""

    @property
    def table(self) -> Tensor:
        """The (num_samples, num_classes) buffer the logits are made from."""
        raise NotImplementedError

    @property
    def num_samples(self) -> int:
        return self.table.shape[0]

    @property
    def num_classes(self) -> int:
        return self.table.shape[1]

    def logits_at(self, index: Tensor) -> Tensor:
        raise NotImplementedError

    def logits(self, batch: Batch) -> Tensor:
        if batch.index is None:
            raise UserError(f"the teacher serves per-sample outputs ({self.source}) and needs sample indices in "
                            "every batch")
        return self.logits_at(batch.index.long()).to(batch.images.device)

    def check_fits(self, num_train: int, num_classes: int, where: str) -> None:
        """A one-line error when the table does not belong to this training split."""
        if (self.num_samples, self.num_classes) != (num_train, num_classes):
            raise UserError(f"{where} holds outputs for {self.num_samples} samples x {self.num_classes} classes, but "
                            f"the training split has {num_train} samples x {num_classes} classes; build it from "
                            "the same data config")


def logits_of(model: nn.Module, batch: Batch) -> Tensor:
    """The logits of ``batch`` from a served :class:`Teacher` or from a plain model."""
    return model.logits(batch) if isinstance(model, Teacher) else model(batch.images)


def runs_images(model: nn.Module) -> bool:
    """Whether ``model`` gives logits of any images (a plain model, or a teacher that serves :data:`IMAGES`)."""
    return not isinstance(model, Teacher) or IMAGES in model.serves


__all__ = ["FEATURES", "IMAGES", "SPLIT", "WEIGHTS", "TableTeacher", "Teacher", "logits_of", "runs_images"]
