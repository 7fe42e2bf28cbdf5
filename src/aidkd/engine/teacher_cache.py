"""The indexed teacher: a teacher that serves fixed per-sample outputs by sample index instead of running a model.

Two kinds exist: a model's stored outputs on the views of the training split
(:class:`aidkd.engine.view_cache.ViewCachedTeacher`, ``teacher.cache`` and ``teacher.kind: logits``) and AID's
projection targets (:class:`aidkd.aid.project.TargetTeacher`, ``teacher.kind: targets``). Methods ask for
``teacher_logits(batch)``; feature-based methods need the real teacher and are refused with one line.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..errors import UserError


class IndexedTeacher(nn.Module):
    """A teacher that serves fixed per-sample logits by sample index (``forward(images, index)``); it has no
    features, so it serves logit-based methods only. Subclasses say how the logits of ``index`` are made."""

    indexed = True
    source = "per-sample outputs"

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

    def forward(self, images: Tensor, index: Tensor | None) -> Tensor:
        if index is None:
            raise UserError(f"the teacher serves per-sample outputs ({self.source}) and needs sample indices in "
                            "every batch")
        return self.logits_at(index.long()).to(images.device)

    def forward_features(self, images: Tensor):
        raise UserError(
            f"this method needs the teacher's features, but the teacher serves per-sample outputs ({self.source}); "
            "use a logit-based method or a teacher model (teacher.kind: model, teacher.cache: false)"
        )

    def check_fits(self, num_train: int, num_classes: int, where: str) -> None:
        """A one-line error when the table does not belong to this training split."""
        if (self.num_samples, self.num_classes) != (num_train, num_classes):
            raise UserError(f"{where} holds outputs for {self.num_samples} samples x {self.num_classes} classes, but "
                            f"the training split has {num_train} samples x {num_classes} classes; build it from "
                            "the same data config")
