"""A teacher model served as it is (:class:`ModelTeacher`), lean when its method uses only its logits (the same
logits for less arithmetic).

A frozen teacher is only ever evaluated, so its batch norms are constant affine maps and can be folded into the
convolutions before them (``torch.fx.experimental.optimization.fuse``: the model is traced and every
conv -> batch norm pair with no other user of the conv's output is replaced by one convolution). It runs under
``torch.inference_mode`` and, optionally, in channels_last memory format. Its logits equal the original
model's to float rounding (tests/test_speed.py checks every CIFAR zoo family with batch norm).

Models whose forward has Python control flow on tensor shapes cannot be traced (VGG, ShuffleV2 in this zoo):
they are served unfolded, and :attr:`ModelTeacher.folded` says so. :meth:`ModelTeacher.features` always runs
the original model, so feature-based methods see the features they expect.

Measured on a 2-core CPU (docs/results/lean_teacher.md): against the plain forward under ``no_grad``,
inference mode alone is worth nothing measurable, folding 1.07x (resnet32x4) and 1.27x (resnet56), and
channels_last on top of folding nothing more; the student's step gains 1.15-1.26x from channels_last. So the
teacher folds by default, and the engine's ``train.channels_last`` (on by default) puts the student, its
batches and the teacher in channels_last together. On CUDA the engine's bf16 autocast and ``train.compile``
apply to the teacher's forward as they do to the student's.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.fx.experimental.optimization import fuse

from ..data.base import Batch
from .base import FEATURES, IMAGES, SPLIT, WEIGHTS, Teacher


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, str]:
    """``(folded copy of model in eval mode, "")`` or, when the model cannot be traced, ``(model, reason)``."""
    try:
        return fuse(copy.deepcopy(model).eval()), ""
    except Exception as e:  # torch.fx raises several types for untraceable Python (TraceError, TypeError, ...)
        return model, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


class ModelTeacher(Teacher):
    """A teacher model. ``lean``: ``forward(x)`` gives the logits of the batch-norm-folded copy under inference mode
    (as an ordinary tensor, so that losses may save it for their backward), in channels_last with
    ``channels_last``; a lean teacher is for methods that use its logits only. Otherwise the model runs as it is
    (its weights may be trained: :data:`WEIGHTS`). :meth:`features` and ``state_dict`` are the original model's."""

    serves = frozenset({SPLIT, IMAGES, FEATURES, WEIGHTS})

    def __init__(self, model: nn.Module, lean: bool = False, channels_last: bool = False, source: str = "teacher"):
        super().__init__()
        self.model = model
        self.source = source
        self.lean = lean
        if lean:  # the folded copy is not what a method would train
            self.serves = frozenset({SPLIT, IMAGES, FEATURES})
        fast, why = fold_batchnorm(model) if lean else (model, "not lean")
        self.folded = fast is not model
        self.not_folded_reason = why
        self.channels_last = channels_last
        if channels_last:
            fast = fast.to(memory_format=torch.channels_last)
        object.__setattr__(self, "fast", fast)  # not a submodule: state_dict stays the original model's

    def _apply(self, fn, recurse=True):  # .to(device) / .half() move the folded copy too
        super()._apply(fn, recurse)
        if self.fast is not self.model:
            self.fast._apply(fn, recurse)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if not self.lean:
            return self.model(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self.fast(x)
        return out.clone()  # an inference tensor cannot be saved for backward; a copy of the logits can

    def logits(self, batch: Batch) -> Tensor:
        return self(batch.images)

    def features(self, x: Tensor):
        return self.model.forward_with_features(x)


__all__ = ["ModelTeacher", "fold_batchnorm"]
